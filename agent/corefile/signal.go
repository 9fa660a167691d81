package corefile

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strconv"
)

// signalNames uses the Linux numbering shared by x86, arm and most other
// architectures (not MIPS, SPARC or Alpha, which CoreDog does not run on).
var signalNames = [...]string{
	1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
	7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
	13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM", 16: "SIGSTKFLT", 17: "SIGCHLD",
	18: "SIGCONT", 19: "SIGSTOP", 20: "SIGTSTP", 21: "SIGTTIN", 22: "SIGTTOU",
	23: "SIGURG", 24: "SIGXCPU", 25: "SIGXFSZ", 26: "SIGVTALRM", 27: "SIGPROF",
	28: "SIGWINCH", 29: "SIGIO", 30: "SIGPWR", 31: "SIGSYS",
}

// SignalName returns the Linux name of sig ("SIGSEGV" for 11), "SIG<n>" for numbers
// without a standard name (real-time signals, garbage) and "" for 0, which means
// "no signal known".
func SignalName(sig int) string {
	if sig == 0 {
		return ""
	}
	if sig > 0 && sig < len(signalNames) {
		return signalNames[sig]
	}
	return "SIG" + strconv.Itoa(sig)
}

// signatureVersion is hashed first so a future change of what goes into a signature
// can never collide with today's values.
const signatureVersion = "coredog.io/signature/v1"

// Signature is a short stable hash that groups crashes with the same cause: the first
// 12 hex characters of SHA-256 over a length-prefixed encoding of executable, signal,
// module and offset. Length prefixes keep ("ab", "c") and ("a", "bc") apart. Callers
// must pass values from the same source every time (e.g. Core.Executable, not the
// 15-byte comm from the file name) or the same crash gets two signatures.
func Signature(executable string, signal int, module string, offset uint64) string {
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	writeString := func(s string) {
		h.Write(buf[:binary.PutUvarint(buf[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	writeString(signatureVersion)
	writeString(executable)
	h.Write(buf[:binary.PutVarint(buf[:], int64(signal))])
	writeString(module)
	h.Write(buf[:binary.PutUvarint(buf[:], offset)])
	return hex.EncodeToString(h.Sum(nil))[:12]
}
