package cli

import (
	"testing"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestAge(t *testing.T) {
	for _, tc := range []struct {
		ago  time.Duration
		zero bool
		want string
	}{
		{ago: 0, want: "0s"},
		{ago: 45 * time.Second, want: "45s"},
		{ago: 3*time.Minute + 10*time.Second, want: "3m10s"},
		{ago: 90 * time.Minute, want: "90m"},
		{ago: 5 * time.Hour, want: "5h"},
		{ago: 50 * time.Hour, want: "2d2h"},
		{ago: 400 * 24 * time.Hour, want: "400d"},
		{ago: -time.Minute, want: "0s"}, // clock skew
		{zero: true, want: "<unknown>"},
	} {
		at := now.Add(-tc.ago)
		if tc.zero {
			at = time.Time{}
		}
		if got := age(now, at); got != tc.want {
			t.Errorf("age(%v) = %q, want %q", tc.ago, got, tc.want)
		}
	}
}

func TestDisplaySizeAndSignal(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cd        coredogv1.CoreDump
		size, sig string
	}{
		{"agent's display size", testDump("a", 0), "43Mi", "SIGSEGV"},
		{"computed size", testDump("b", 0, func(cd *coredogv1.CoreDump) { cd.Spec.DisplaySize, cd.Spec.Size = "", 1536<<20 }), "1.5Gi", "SIGSEGV"},
		{"small size", testDump("c", 0, func(cd *coredogv1.CoreDump) { cd.Spec.DisplaySize, cd.Spec.Size = "", 812 }), "812", "SIGSEGV"},
		{"name from number", testDump("d", 0, withSignal(6, "")), "43Mi", "SIGABRT"},
		{"no signal", testDump("e", 0, withSignal(0, "")), "43Mi", ""},
	} {
		if got := displaySize(&tc.cd); got != tc.size {
			t.Errorf("%s: displaySize = %q, want %q", tc.name, got, tc.size)
		}
		if got := signalName(&tc.cd); got != tc.sig {
			t.Errorf("%s: signalName = %q, want %q", tc.name, got, tc.sig)
		}
	}
}

func TestSafe(t *testing.T) {
	for in, want := range map[string]string{
		"server":             "server",
		"my server --flag=ü": "my server --flag=ü",
		"evil\x1b[31mred":    `evil\x1b[31mred`,
		"tab\there":          `tab\there`,
		"line\nbreak":        `line\nbreak`,
		"bad\xffutf8":        `bad\xffutf8`,
		"":                   "",
	} {
		if got := safe(in); got != want {
			t.Errorf("safe(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTruncate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"a bit too long", 10, "a bit too…"},
		{"multi\nline   spaces", 40, "multi line spaces"},
	} {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("truncate(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
