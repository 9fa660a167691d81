package procio

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadCharsCountsReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	before := MustReadChars(t)
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	if got := MustReadChars(t) - before; got < 1<<20 {
		t.Errorf("reading 1 MiB raised rchar by %d", got)
	}
}
