package cli

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/test/testcrash"
)

// realCrash is a C program that crashed, its core, and what gdb shows of
// it with the program at hand: the oracle the tests compare with.
type realCrash struct {
	dir, prog, core, buildID string
	frames                   []string
}

// newRealCrash compiles the crasher, makes a real core of it, and records
// gdb's backtrace with the program present.
func newRealCrash(t *testing.T) *realCrash {
	t.Helper()
	if _, err := exec.LookPath("gdb"); err != nil {
		t.Fatal("gdb is needed: it is the oracle of these tests (apt-get install gdb)")
	}
	// A short directory: the core keeps the program's path.
	dir, err := os.MkdirTemp("", "gdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	prog, err := testcrash.Build(dir, "crashy")
	if err != nil {
		t.Fatal(err)
	}
	crash, err := testcrash.Run(prog, dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	c := &realCrash{dir: dir, prog: prog, core: crash.Core, buildID: buildIDOf(t, prog)}
	c.frames = gdbFrames(t, nil, dir, "-batch", "-ex", "bt", prog, crash.Core)
	if len(c.frames) == 0 || !strings.Contains(strings.Join(c.frames, "\n"), "main (") {
		t.Fatalf("gdb with the program shows no main frame: %q", c.frames)
	}
	return c
}

// buildIDOf reads an ELF file's GNU build-id.
func buildIDOf(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := f.Section(".note.gnu.build-id")
	if s == nil {
		t.Fatalf("%s has no build-id", path)
	}
	d, err := s.Data()
	if err != nil || len(d) < 16 {
		t.Fatalf("%s: build-id note: %v", path, err)
	}
	// namesz, descsz, type, "GNU\0", desc.
	return hex.EncodeToString(d[16:])
}

// fileStore opens a file:// store at dir/bucket with prefix, as the
// manager would.
func fileStore(t *testing.T, dir, prefix string) (storage.Store, string) {
	t.Helper()
	url := "file://" + filepath.Join(dir, "bucket") + "/" + prefix
	loc, err := storage.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	s, err := storage.Open(context.Background(), loc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, url
}

func putFile(t *testing.T, s storage.Store, key, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := s.Write(context.Background(), key, f, storage.WriteOptions{IfAbsent: true}); err != nil {
		t.Fatal(err)
	}
}

var frameLine = regexp.MustCompile(`^#\d+ `)

// gdbFrames runs gdb in dir with env added and returns its backtrace lines.
func gdbFrames(t *testing.T, env []string, dir string, args ...string) []string {
	t.Helper()
	frames, _ := gdbRun(t, env, dir, args...)
	return frames
}

// gdbRun runs gdb in dir with env added and returns its backtrace lines
// and all it printed.
func gdbRun(t *testing.T, env []string, dir string, args ...string) ([]string, string) {
	t.Helper()
	cmd := exec.Command("gdb", append([]string{"-nx"}, args...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("gdb %q: %v\n%s", args, err, out.String())
	}
	var frames []string
	for l := range strings.SplitSeq(out.String(), "\n") {
		if frameLine.MatchString(l) {
			frames = append(frames, strings.Join(strings.Fields(l), " "))
		}
	}
	t.Logf("gdb %q:\n%s", args, out.String())
	return frames, out.String()
}
