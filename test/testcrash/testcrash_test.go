package testcrash

import (
	"debug/elf"
	"testing"
)

func TestRunWritesACore(t *testing.T) {
	dir := t.TempDir()
	prog, err := Build(dir, "crasher")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Run(prog, dir, t.Logf, "--touch=4")
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(c.Core)
	if err != nil {
		t.Fatalf("core is not ELF: %v", err)
	}
	defer f.Close()
	if f.Type != elf.ET_CORE {
		t.Fatalf("core type = %v, want ET_CORE", f.Type)
	}
	if c.PID <= 0 {
		t.Fatalf("pid = %d", c.PID)
	}
}
