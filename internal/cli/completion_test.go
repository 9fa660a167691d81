package cli

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

func completionScript(t *testing.T, shell string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), []string{"completion", shell}, &out, &errOut); err != nil {
		t.Fatalf("completion %s: %v", shell, err)
	}
	return out.String()
}

// The bash script, sourced into a real bash, completes commands, each
// command's flags and the shells.
func TestCompletionBash(t *testing.T) {
	script := completionScript(t, "bash")
	for _, tc := range []struct {
		line      string
		want, not []string
	}{
		{"kubectl-coredog de", []string{"debug", "describe"}, []string{"download", "list"}},
		{"kubectl-coredog ", []string{"list", "describe", "download", "debug", "status", "completion", "--namespace"}, nil},
		{"kubectl-coredog -n ops list --", []string{"--help", "--namespace", "--all-namespaces"}, []string{"list"}},
		{"kubectl-coredog completion ", []string{"bash", "zsh", "fish"}, []string{"list"}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			words := strings.Fields(tc.line)
			if strings.HasSuffix(tc.line, " ") {
				words = append(words, "")
			}
			var quoted []string
			for _, w := range words {
				quoted = append(quoted, "'"+w+"'")
			}
			prog := script + "\nCOMP_WORDS=(" + strings.Join(quoted, " ") + ")\nCOMP_CWORD=" + string(rune('0'+len(words)-1)) +
				"\n_kubectl_coredog\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
			out, err := exec.Command("bash", "--norc", "--noprofile", "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			got := strings.Fields(string(out))
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("completing %q offers %v, not %q", tc.line, got, w)
				}
			}
			for _, w := range tc.not {
				if slices.Contains(got, w) {
					t.Errorf("completing %q offers %q", tc.line, w)
				}
			}
		})
	}
}

// zsh and fish are not on the test machines: their scripts are checked for
// every command and a command's flags, and for the shell's own syntax where
// the shell is installed.
func TestCompletionZshFish(t *testing.T) {
	for _, shell := range []string{"zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			script := completionScript(t, shell)
			for _, c := range commandNames() {
				if !strings.Contains(script, c) {
					t.Errorf("the %s script does not complete %s", shell, c)
				}
			}
			if !strings.Contains(script, "all-namespaces") {
				t.Errorf("the %s script lacks the flags", shell)
			}
			if path, err := exec.LookPath(shell); err == nil {
				if out, err := exec.Command(path, "-n", "-c", script).CombinedOutput(); err != nil {
					t.Errorf("%s -n: %v\n%s", shell, err, out)
				}
			}
		})
	}
}

func TestCompletionRefusesUnknownShell(t *testing.T) {
	var out bytes.Buffer
	for _, args := range [][]string{{"completion"}, {"completion", "powershell"}, {"completion", "bash", "zsh"}} {
		if err := Run(context.Background(), args, &out, &out); !errors.Is(err, errUsage) {
			t.Errorf("%v: error %v, want a usage error", args, err)
		}
	}
}
