package analyze_test

import (
	"testing"

	"github.com/coredog/coredog/agent/analyze"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
)

func TestNormalizeFunction(t *testing.T) {
	for in, want := range map[string]string{
		"main":                              "main",
		"shop::Cart<int>::checkout":         "shop::Cart::checkout",
		"std::vector<std::pair<int, char>>": "std::vector",
		"foo(int, char const*)":             "foo",
		"parse_header.cold":                 "parse_header",
		"parse_header.isra.0":               "parse_header",
		"compute.constprop.0.part.1":        "compute",
		"foo [clone .cold]":                 "foo",
		"main.(*Server).handle":             "main.(*Server).handle",
		"Foo::bar(int) const":               "Foo::bar",
		"":                                  "",
	} {
		if got := analyze.NormalizeFunction(in); got != want {
			t.Errorf("NormalizeFunction(%q) = %q, want %q", in, got, want)
		}
	}
}

func frame(module, fn, offset string) coredogv1.StackFrame {
	return coredogv1.StackFrame{Module: module, Function: fn, Offset: offset, PC: "0x1"}
}

func TestProgramFrames(t *testing.T) {
	abort := []coredogv1.StackFrame{
		frame("libc.so.6", "", "0x8eeec"), frame("libc.so.6", "raise", "0x3bfb2"), frame("libc.so.6", "abort", "0x26472"),
		frame("libstdc++.so.6.0.30", "", "0x9d919"), frame("libstdc++.so.6.0.30", "__cxa_throw", "0xa90cb"),
		frame("server", "shop::Cart<int>::checkout", "0x10b2"), frame("server", "shop::pay", "0x11e9"), frame("server", "main", "0x10c9"),
	}
	goPanic := []coredogv1.StackFrame{
		frame("server", "runtime.raise", "0x1"), frame("server", "runtime.sigreturn__sigaction", "0x2"), frame("server", "runtime.sigpanic", "0x3"),
		frame("server", "main.crash", "0x4"), frame("server", "main.outer", "0x5"), frame("server", "main.main", "0x6"),
	}
	stripped := []coredogv1.StackFrame{frame("libc.so.6", "", "0x1"), frame("server", "", "0x1199"), frame("server", "", "0x11b9")}
	for _, tc := range []struct {
		name   string
		frames []coredogv1.StackFrame
		want   []string
	}{
		{"C++ terminate", abort, []string{"shop::Cart::checkout", "shop::pay", "main"}},
		{"Go nil dereference", goPanic, []string{"main.crash", "main.outer", "main.main"}},
		{"stripped", stripped, []string{"server+0x1199", "server+0x11b9"}},
		{"only the C library", abort[:3], nil},
	} {
		got := analyze.ProgramFrames(tc.frames, analyze.SignatureFrames)
		if len(got) != len(tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
			}
		}
	}
}

// TestSignatureIgnoresAddressesAndSharedFrames: two crashes in the same
// functions at other addresses, through other C library code, share a
// signature; another function, executable or signal does not.
func TestSignatureIgnoresAddressesAndSharedFrames(t *testing.T) {
	an := func(frames ...coredogv1.StackFrame) *wire.Analysis {
		return &wire.Analysis{CrashingThread: 7, Stacks: []wire.ThreadStack{{TID: 3}, {TID: 7, Frames: frames}}}
	}
	a := an(frame("libc.so.6", "raise", "0x1"), frame("server", "parse.cold", "0x10"), frame("server", "main", "0x20"))
	b := an(frame("libc.so.6", "", "0x999"), frame("libc.so.6", "abort", "0x2"), frame("server", "parse", "0x4410"), frame("server", "main", "0x4420"))
	c := an(frame("server", "serve", "0x10"), frame("server", "main", "0x20"))
	sa, ok := analyze.Signature("server", 11, a)
	sb, _ := analyze.Signature("server", 11, b)
	sc, _ := analyze.Signature("server", 11, c)
	sd, _ := analyze.Signature("server", 6, a)
	se, _ := analyze.Signature("client", 11, a)
	if !ok || len(sa) != 12 || sa != sb {
		t.Errorf("same crash: %q %q", sa, sb)
	}
	for _, other := range []string{sc, sd, se} {
		if other == sa {
			t.Errorf("different crash has the same signature %q", sa)
		}
	}
	if _, ok := analyze.Signature("server", 11, an(frame("libc.so.6", "raise", "0x1"))); ok {
		t.Error("a signature from C library frames alone")
	}
}
