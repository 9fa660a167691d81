package detect

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/test/procio"
)

// What a workload (or anyone who can write into the watched directory) can
// put there to make the detector read, follow or hang on something: it must
// emit regular files only, as they are at the moment they are judged
// complete, and never read their contents.

func TestRunIgnoresDeviceFiles(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	devices := []struct {
		name string
		mode uint32
		dev  int
	}{
		{"core.null.1", syscall.S_IFCHR, 1<<8 | 3},   // /dev/null
		{"core.zero.2", syscall.S_IFCHR, 1<<8 | 5},   // /dev/zero: endless if read
		{"core.random.3", syscall.S_IFCHR, 1<<8 | 8}, // /dev/random
		{"core.loop.4", syscall.S_IFBLK, 7 << 8},     // a loop device (major 7, minor 0)
		{"core.sda.5", syscall.S_IFBLK, 8 << 8},      // a disk (major 8, minor 0)
		{"sub/core.tty.6", syscall.S_IFCHR, 5 << 8},  // /dev/tty (major 5, minor 0), in a subdirectory
	}
	mk := func(suffix string) {
		for _, d := range devices {
			p := h.path(d.name + suffix)
			mustOK(t, os.MkdirAll(h.path("sub"), 0o755))
			if err := syscall.Mknod(p, d.mode|0o600, d.dev); err != nil {
				if errors.Is(err, syscall.EPERM) {
					t.Skipf("cannot make device files here: %v", err)
				}
				t.Fatal(err)
			}
		}
	}
	mk(".before")
	h.start()
	mk(".after")
	h.write("core.real.1", "real")
	h.waitFor(1, 5*time.Second)
	h.settleFor(600*time.Millisecond, "core.real.1")
}

// TestRunRenameRace replaces a file by rename while it settles and again
// after it was emitted: each emission carries the identity of the file that
// was at the path when it was judged complete, so a later open can tell the
// replacement apart; the file replaced before completion is never emitted.
func TestRunRenameRace(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{SettleTime: 500 * time.Millisecond, PollInterval: 200 * time.Millisecond})
	h.start()
	p := h.write("core.race.1", "first")
	first, err := os.Lstat(p)
	mustOK(t, err)
	time.Sleep(150 * time.Millisecond) // seen, not yet complete
	mustOK(t, os.WriteFile(p+".tmp", []byte("second, longer"), 0o600))
	mustOK(t, os.Rename(p+".tmp", p))
	got := h.waitFor(1, 5*time.Second)[0]
	checkIdentity(t, got)
	if got.Identity.Inode == observationOf(first).identity().Inode {
		t.Fatalf("emitted the replaced file's identity %s", got.Identity)
	}

	// Replaced after emission: the replacement is another file, emitted
	// with its own identity; the first emission still names the old one.
	mustOK(t, os.WriteFile(p+".tmp", []byte("third"), 0o600))
	mustOK(t, os.Rename(p+".tmp", p))
	second := h.waitFor(2, 5*time.Second)[1]
	checkIdentity(t, second)
	if second.Identity == got.Identity {
		t.Fatalf("the replacement was emitted with the replaced file's identity %s", got.Identity)
	}

	// A symbolic link renamed over it is not a file: nothing more comes.
	mustOK(t, os.Symlink("/etc/passwd", p+".tmp"))
	mustOK(t, os.Rename(p+".tmp", p))
	time.Sleep(time.Second)
	if n := len(h.emitted()); n != 2 {
		t.Fatalf("%d emissions after a symlink replaced the file, want 2: %v", n, h.emitted())
	}
}

// TestRunEmitsCraftedNamesAsTheyAre feeds names meant to break parsers,
// templates and shells: they are emitted once each, byte for byte; turning
// them into anything else is the reader's job.
func TestRunEmitsCraftedNamesAsTheyAre(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	names := []string{
		"core.web\n0.app.1.11.1",
		"core.\xff\xfe.app.2.11.1",
		"core.%s%n%x.{{.Secret}}.3.11.1",
		"core.$(reboot).`id`.4.11.1",
		"-rf",
		"core.." + strings.Repeat(".", 10),
		"core." + strings.Repeat("x", 250),
		"core.back\\slash.5.11.1",
	}
	h.start()
	for _, n := range names {
		h.write(n, "x")
	}
	h.waitFor(len(names), 5*time.Second)
	for _, f := range h.settleFor(600*time.Millisecond, names...) {
		checkIdentity(t, f)
	}
}

// TestRunHugeSparseFile: a 100 GiB file (a hole) is judged by its metadata
// alone, never read.
func TestRunHugeSparseFile(t *testing.T) {
	t.Parallel()
	const size = 100 << 30
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	h.start()
	before := procio.MustReadChars(t)
	f, err := os.Create(h.path("core.huge.1"))
	mustOK(t, err)
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Skipf("this file system cannot hold a %d-byte sparse file: %v", int64(size), err)
	}
	mustOK(t, f.Close())
	got := h.waitFor(1, 5*time.Second)[0]
	if got.Identity.Size != size {
		t.Errorf("size %d, want %d", got.Identity.Size, int64(size))
	}
	// Other parallel tests read too, but nowhere near this much.
	if read := procio.MustReadChars(t) - before; read > 64<<20 {
		t.Errorf("read %d bytes while detecting a sparse file", read)
	}
}
