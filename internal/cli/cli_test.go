package cli

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

// TestCommandLine covers what is decided before any cluster is contacted.
func TestCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args       []string
		wantErr    string
		wantStdout []string
	}{
		{args: nil, wantErr: "no command given", wantStdout: []string{"Commands:", "download"}},
		{args: []string{"--help"}, wantStdout: []string{"Commands:", "list", "describe", "download", "debug", "status", "--kubeconfig", "--context", "-n, --namespace", "-A, --all-namespaces"}},
		{args: []string{"help"}, wantStdout: []string{"Commands:"}},
		{args: []string{"help", "download"}, wantStdout: []string{"kubectl coredog download NAME", "--raw", "--force", "--storage-url", "AWS_ACCESS_KEY_ID"}},
		{args: []string{"list", "-h"}, wantStdout: []string{"--group", "--workload", "--since", "--signal", "-l, --selector", "-o, --output"}},
		{args: []string{"-n", "x", "debug", "--help"}, wantStdout: []string{"--run", "--debugger-image"}},
		{args: []string{"frobnicate"}, wantErr: `unknown command "frobnicate"`},
		{args: []string{"list", "extra"}, wantErr: "list takes no arguments"},
		{args: []string{"list", "--bogus"}, wantErr: "unknown flag: --bogus"},
		{args: []string{"list", "-o", "xml"}, wantErr: `-o "xml"`},
		{args: []string{"list", "--since", "forever"}, wantErr: "--since"},
		{args: []string{"list", "--workload", "a/b/c/d"}, wantErr: "--workload"},
		{args: []string{"list", "-l", "a in (b"}, wantErr: "-l"},
		{args: []string{"describe"}, wantErr: "needs a CoreDump name"},
		{args: []string{"describe", "-A", "x"}, wantErr: "-A/--all-namespaces only applies"},
		{args: []string{"download"}, wantErr: "one CoreDump name"},
		{args: []string{"download", "a", "b"}, wantErr: "one CoreDump name"},
		{args: []string{"debug", "-A", "x"}, wantErr: "-A/--all-namespaces only applies"},
		{args: []string{"status", "x"}, wantErr: "status takes no arguments"},
	} {
		var out, errOut bytes.Buffer
		err := Run(context.Background(), tc.args, &out, &errOut)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errUsage)) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.wantErr)
		}
		for _, w := range tc.wantStdout {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%q: stdout lacks %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}

func TestSplitName(t *testing.T) {
	for _, tc := range []struct{ arg, ns, name string }{
		{"core-a", "coredog-system", "core-a"},
		{"other/core-a", "other", "core-a"},
	} {
		ns, name := splitName(tc.arg, "coredog-system")
		if ns != tc.ns || name != tc.name {
			t.Errorf("splitName(%q) = %s, %s", tc.arg, ns, name)
		}
	}
}

func TestNamespaceDefault(t *testing.T) {
	for _, tc := range []struct{ env, want string }{{"", DefaultNamespace}, {"coredog", "coredog"}} {
		a := &app{getenv: func(k string) string {
			if k == envNamespace {
				return tc.env
			}
			return ""
		}}
		fs := a.globalFlags()
		if err := fs.Parse(nil); err != nil {
			t.Fatal(err)
		}
		if a.namespace != tc.want {
			t.Errorf("env %q: namespace %q, want %q", tc.env, a.namespace, tc.want)
		}
	}
}
