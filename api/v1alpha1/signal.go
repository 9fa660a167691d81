package v1alpha1

import "strconv"

// signalNames uses the Linux numbering shared by x86, arm and most other
// architectures (not MIPS, SPARC or Alpha, which CoreDog does not run on).
// The agent writes spec.process.signalName from it and the CLI reads it, so
// it lives with the API rather than beside the ELF parser.
var signalNames = [...]string{
	1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
	7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
	13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
	18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
	23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF",
	28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
}

// SignalNameOf returns the Linux name of sig ("SIGSEGV" for 11), "SIG<n>" for
// numbers without a standard name (real-time signals, garbage) and "" for 0,
// which means "no signal known".
func SignalNameOf(sig int) string {
	if sig == 0 {
		return ""
	}
	if sig > 0 && sig < len(signalNames) {
		return signalNames[sig]
	}
	return "SIG" + strconv.Itoa(sig)
}
