// Package procio reads this process's I/O counters from /proc, for tests that
// check how many bytes a piece of code read (a sparse file's holes must not
// be read, a hostile header must not make a parser read the whole file).
package procio

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// ReadChars is the rchar of /proc/self/io: the bytes this process has read
// through read-like calls, page-cache hits included.
func ReadChars() (int64, error) {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("/proc/self/io has no rchar line")
}

// MustReadChars is ReadChars for a test, which fails when the counter cannot
// be read: a test that checks bytes read must not pass without reading it.
func MustReadChars(tb testing.TB) int64 {
	tb.Helper()
	n, err := ReadChars()
	if err != nil {
		tb.Fatalf("reading this process's I/O counters: %v", err)
	}
	return n
}
