package v1alpha1

import (
	"strings"
	"testing"
)

func TestLabelValue(t *testing.T) {
	cases := []struct{ in, want string }{
		{"node-1", "node-1"},
		{"", ""},
		{"SIGSEGV", "SIGSEGV"},
	}
	for _, tc := range cases {
		if got := LabelValue(tc.in); got != tc.want {
			t.Errorf("LabelValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	for _, in := range []string{strings.Repeat("a", 64), "ip-10-0-0-1.eu-west-1.compute.internal" + strings.Repeat(".x", 20), "my app", "-lead", "@@@", "a/b"} {
		got := LabelValue(in)
		if len(got) > 63 || !labelValueRE.MatchString(got) {
			t.Errorf("LabelValue(%q) = %q is not a label value", in, got)
		}
		if LabelValue(in+"x") == got {
			t.Errorf("LabelValue(%q) collides with a longer value", in)
		}
	}
}

func TestDisplaySize(t *testing.T) {
	cases := []struct {
		in   int64
		want string
	}{
		{0, "0"}, {812, "812"}, {1024, "1Ki"}, {1536, "1.5Ki"}, {43 << 20, "43Mi"},
		{41<<20 + 100, "41Mi"}, {(1 << 30) + (1 << 29), "1.5Gi"}, {1<<20 - 1, "1Mi"}, {5 << 40, "5Ti"},
	}
	for _, tc := range cases {
		if got := DisplaySize(tc.in); got != tc.want {
			t.Errorf("DisplaySize(%d) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
