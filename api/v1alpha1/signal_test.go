package v1alpha1

import "testing"

func TestSignalNameOf(t *testing.T) {
	tests := []struct {
		sig  int
		want string
	}{
		{0, ""},
		{1, "SIGHUP"},
		{4, "SIGILL"},
		{5, "SIGTRAP"},
		{6, "SIGABRT"},
		{7, "SIGBUS"},
		{8, "SIGFPE"},
		{9, "SIGKILL"},
		{11, "SIGSEGV"},
		{15, "SIGTERM"},
		{16, "SIGSTKFLT"},
		{24, "SIGXCPU"},
		{25, "SIGXFSZ"},
		{31, "SIGSYS"},
		{32, "SIG32"},
		{34, "SIG34"},
		{64, "SIG64"},
		{-1, "SIG-1"},
	}
	for _, tt := range tests {
		if got := SignalNameOf(tt.sig); got != tt.want {
			t.Errorf("SignalNameOf(%d) = %q, want %q", tt.sig, got, tt.want)
		}
	}
	for sig := 1; sig <= 31; sig++ {
		if SignalNameOf(sig) == "" || SignalNameOf(sig)[:3] != "SIG" {
			t.Errorf("SignalNameOf(%d) = %q", sig, SignalNameOf(sig))
		}
	}
}
