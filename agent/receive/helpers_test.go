package receive

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// Run receives one core without the node-wide budget, as run does for a
// receiver that holds a slot.
func Run(cfg Config, args []string, stdin io.Reader) (string, error) {
	r, err := run(cfg, nil, args, stdin)
	return r.path, err
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeBinary is a stand-in for the agent binary that Install copies.
func fakeBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agent")
	must(t, os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755))
	return bin
}
