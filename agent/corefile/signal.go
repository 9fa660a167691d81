package corefile

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
)

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
