package corefile

import (
	"regexp"
	"testing"
)

func TestSignature(t *testing.T) {
	type in struct {
		exe    string
		sig    int
		module string
		off    uint64
	}
	// Golden values: a change here regroups every crash users have seen, so it must
	// come with a new signatureVersion, never silently. They were cross-checked with an
	// independent implementation of the encoding (uvarint lengths, zigzag signal).
	golden := []struct {
		in   in
		want string
	}{
		{in{"crashy.v1", 11, "crashy.v1", 0x1139}, "7a6f907cc920"},
		{in{"java", 6, "libjvm.so", 0xabcdef}, "e45137a31ab2"},
		{in{"", 0, "", 0}, "cb7c839e786e"},
	}
	hex12 := regexp.MustCompile(`^[0-9a-f]{12}$`)
	for _, g := range golden {
		got := Signature(g.in.exe, g.in.sig, g.in.module, g.in.off)
		if !hex12.MatchString(got) {
			t.Errorf("Signature%+v = %q, want 12 hex characters", g.in, got)
		}
		if got != g.want {
			t.Errorf("Signature%+v = %q, want %q", g.in, got, g.want)
		}
		if again := Signature(g.in.exe, g.in.sig, g.in.module, g.in.off); again != got {
			t.Errorf("Signature%+v not stable: %q then %q", g.in, got, again)
		}
	}
	// Each input matters, and field boundaries are not ambiguous.
	distinct := []in{
		{"app", 11, "app", 0x10},
		{"app", 6, "app", 0x10},
		{"app", 11, "libc.so.6", 0x10},
		{"app", 11, "app", 0x11},
		{"app2", 11, "app", 0x10},
		{"ab", 11, "c", 0},
		{"a", 11, "bc", 0},
		{"a", -11, "bc", 0},
	}
	seen := map[string]in{}
	for _, d := range distinct {
		s := Signature(d.exe, d.sig, d.module, d.off)
		if prev, dup := seen[s]; dup {
			t.Errorf("Signature%+v == Signature%+v == %q", d, prev, s)
		}
		seen[s] = d
	}
}
