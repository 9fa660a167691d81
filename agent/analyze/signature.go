package analyze

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
)

// signatureVersion is hashed first: frame signatures never collide with the
// crash-site signatures of corefile.Signature (".../v1").
const signatureVersion = "coredog.io/signature/v2"

// SignatureFrames is how many of the program's frames make a signature.
const SignatureFrames = 5

// systemModules are libraries whose frames every crash shares (the C
// library raising and aborting, the C++ runtime terminating, the unwinder,
// the dynamic loader): they say how the process died, not where.
var systemModules = []string{
	"libc.so", "libc-", "libpthread", "ld-linux", "ld64.so", "ld-musl", "libstdc++", "libc++", "libc++abi",
	"libgcc_s", "libunwind", "libm.so", "libdl", "librt", "linux-vdso", "linux-gate",
}

// Frames of the program's own binary that every crash of its kind shares:
// Go's runtime signal and panic machinery, and glibc's abort, raise and
// start-up code when linked statically.
var (
	skippedPrefixes = []string{"runtime.", "__GI_", "__pthread_kill", "__libc_"}
	skippedNames    = map[string]bool{"abort": true, "raise": true, "gsignal": true, "__restore_rt": true, "__assert_fail": true, "_start": true}
)

// ProgramFrames picks from frames (innermost first) the first n that belong
// to the program, each as its normalised function name (or module and
// offset, for a frame without a name).
func ProgramFrames(frames []coredogv1.StackFrame, n int) []string {
	var out []string
	for _, f := range frames {
		if len(out) == n {
			break
		}
		if f.Module == "" || isSystemModule(f.Module) || isSkipped(f.Function) {
			continue
		}
		if name := NormalizeFunction(f.Function); name != "" {
			out = append(out, name)
		} else {
			out = append(out, f.Module+"+"+f.Offset)
		}
	}
	return out
}

func isSystemModule(m string) bool {
	for _, s := range systemModules {
		if strings.HasPrefix(m, s) {
			return true
		}
	}
	return false
}

func isSkipped(fn string) bool {
	if skippedNames[fn] {
		return true
	}
	for _, p := range skippedPrefixes {
		if strings.HasPrefix(fn, p) {
			return true
		}
	}
	return false
}

// NormalizeFunction is a function name as it is in every build: without
// template arguments, parameter lists, compiler clone suffixes (.cold,
// .isra.0, .part.1, .constprop.0, .lto_priv.0) or addresses.
func NormalizeFunction(fn string) string {
	fn = stripBalanced(fn, '<', '>')
	fn = strings.TrimSuffix(fn, " const")
	if strings.HasSuffix(fn, ")") {
		// A parameter list; Go's "main.(*Server).handle" keeps its receiver.
		depth := 0
		for i := len(fn) - 1; i >= 0; i-- {
			if fn[i] == ')' {
				depth++
			} else if fn[i] == '(' {
				depth--
				if depth == 0 {
					fn = fn[:i]
					break
				}
			}
		}
	}
	if i := strings.Index(fn, " [clone"); i >= 0 {
		fn = fn[:i]
	}
	for _, suffix := range []string{".cold", ".isra", ".part", ".constprop", ".lto_priv", ".llvm."} {
		if i := strings.Index(fn, suffix); i > 0 {
			fn = fn[:i]
		}
	}
	return strings.TrimSpace(fn)
}

// stripBalanced removes every open...close group, nested ones included
// ("operator<" and the like come out mangled, but the same every time,
// which is all a hash needs).
func stripBalanced(s string, open, close byte) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == open:
			depth++
		case c == close && depth > 0:
			depth--
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Signature hashes executable, signal and the crashing thread's first
// SignatureFrames frames in the program's own code; ok is false when the
// analysis has none.
func Signature(executable string, signal int, a *wire.Analysis) (string, bool) {
	var frames []coredogv1.StackFrame
	for _, s := range a.Stacks {
		if s.TID == a.CrashingThread {
			frames = s.Frames
			break
		}
	}
	names := ProgramFrames(frames, SignatureFrames)
	if len(names) == 0 {
		return "", false
	}
	h := sha256.New()
	var buf [binary.MaxVarintLen64]byte
	write := func(s string) {
		h.Write(buf[:binary.PutUvarint(buf[:], uint64(len(s)))])
		h.Write([]byte(s))
	}
	write(signatureVersion)
	write(executable)
	h.Write(buf[:binary.PutVarint(buf[:], int64(signal))])
	for _, n := range names {
		write(n)
	}
	return hex.EncodeToString(h.Sum(nil))[:12], true
}
