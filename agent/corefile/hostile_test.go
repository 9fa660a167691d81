package corefile

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/coredog/coredog/test/procio"
)

// hugeSize is the apparent size of the sparse files below: far more than
// any test machine could read in a test, or hold in memory.
const hugeSize = 100 << 30

// writeSparse writes head at offset 0 and each of at (offset → bytes) into a
// file of hugeSize bytes that is otherwise a hole, and returns it open.
func writeSparse(t *testing.T, head []byte, at map[int64][]byte) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "core"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(hugeSize); err != nil {
		t.Skipf("this file system cannot hold a %d-byte sparse file: %v", int64(hugeSize), err)
	}
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	for off, b := range at {
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// TestReadCoreHugeSparseFile reads cores of 100 GiB whose headers point
// into, or claim, the holes: ReadCore reads a bounded amount (not the file),
// allocates a bounded amount (not what the headers claim), and still reports
// what the real headers said.
func TestReadCoreHugeSparseFile(t *testing.T) {
	x := synthX86()
	good := x.bytes()
	far := int64(hugeSize - 1<<30)

	tests := []struct {
		name    string
		head    []byte
		at      map[int64][]byte
		wantErr error // nil: no error
		check   func(t *testing.T, c *Core)
	}{
		{name: "all hole", head: nil, wantErr: ErrNotELF},
		{name: "real notes, then the note segment runs through the hole to the end",
			head: patch(good, phdr0+32, uint64(hugeSize-noteOffset(x)), 8), wantErr: ErrLimit,
			check: func(t *testing.T, c *Core) {
				if c.Signal != 11 || c.BuildID != synthBuildIDHex {
					t.Errorf("Signal %d BuildID %q: want the real notes read", c.Signal, c.BuildID)
				}
			}},
		{name: "note segment of 1 GiB in the hole near the end",
			head: patch(patch(good, phdr0+8, uint64(far), 8), phdr0+32, 1<<30, 8), wantErr: ErrLimit},
		{name: "real notes moved to the end of the file",
			head: patch(good, phdr0+8, uint64(hugeSize-len(encodeNotes(x.notes))), 8),
			at:   map[int64][]byte{hugeSize - int64(len(encodeNotes(x.notes))): encodeNotes(x.notes)},
			check: func(t *testing.T, c *Core) {
				if c.Signal != 11 || c.BuildID != synthBuildIDHex {
					t.Errorf("Signal %d BuildID %q: want the notes found at the end", c.Signal, c.BuildID)
				}
			}},
		{name: "65534 program headers in the hole",
			// All PT_NULL: a core without notes, which is not an error.
			head: patch(patch(good, offPhoff, uint64(far), 8), offPhnum, 0xfffe, 2),
			check: func(t *testing.T, c *Core) {
				if c.Signal != 0 || c.Threads != 0 {
					t.Errorf("Signal %d Threads %d from headers that are all zero", c.Signal, c.Threads)
				}
			}},
		{name: "a load segment claims the whole file and more",
			head: patch(patch(good, phdr0+56+32, hugeSize, 8), phdr0+56+40, 1<<62, 8),
			check: func(t *testing.T, c *Core) {
				if c.Signal != 11 {
					t.Errorf("Signal %d", c.Signal)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeSparse(t, tt.head, tt.at)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			readBefore := procio.MustReadChars(t)
			c, err := ReadCore(f, hugeSize)
			read := procio.MustReadChars(t) - readBefore
			runtime.ReadMemStats(&after)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
				t.Errorf("allocated %d bytes for a %d-byte file", alloc, int64(hugeSize))
			}
			if read > 32<<20 {
				t.Errorf("read %d bytes of a %d-byte file", read, int64(hugeSize))
			}
			t.Logf("err %v; read %d bytes, allocated %d", err, read, after.TotalAlloc-before.TotalAlloc)
			if tt.check != nil {
				if c == nil {
					t.Fatal("no Core")
				}
				tt.check(t, c)
			}
		})
	}
}
