package detect

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A rescan must cost the same however long the agent has run: a path it
// knows is looked up without copying, and a settled file keeps only its
// record.
func TestObserveKnownPathAllocatesNothing(t *testing.T) {
	tr := newTracker("/cores", time.Second, 10*time.Second)
	a := observation{dev: 8, ino: 100, ctimeNanos: 1, mtimeNanos: 1, size: 4096}
	path := []byte("/cores/core.1")
	if _, first := tr.observeName(path, a, SourceRescan, epoch); !first {
		t.Fatal("first observation not reported as first")
	}
	if _, ok := tr.judge("/cores/core.1", pidUnknown, epoch.Add(time.Second)); ok {
		t.Fatal("judged complete before it was seen still")
	}
	tr.observe("/cores/core.1", a, SourcePoll, epoch.Add(time.Second))
	if _, ok := tr.judge("/cores/core.1", pidUnknown, epoch.Add(time.Second)); !ok {
		t.Fatal("still file was not emitted")
	}
	if len(tr.pending) != 0 || tr.files["/cores/core.1"].state != nil {
		t.Fatal("an emitted file is still pending")
	}
	allocs := testing.AllocsPerRun(100, func() {
		tr.beginScan()
		tr.observeName(path, a, SourcePoll, epoch.Add(time.Minute))
		if p := tr.sweep(); len(p) != 0 {
			t.Fatalf("swept %v", p)
		}
	})
	if allocs != 0 {
		t.Errorf("re-observing a settled file allocates %.0f times, want 0", allocs)
	}
	if _, ok := tr.files["/cores/core.1"]; !ok {
		t.Error("a file found by the rescan was swept")
	}
}

func TestSweepForgetsWhatTheRescanDidNotFind(t *testing.T) {
	tr := newTracker("/cores", time.Second, 10*time.Second)
	a := observation{dev: 8, ino: 100, ctimeNanos: 1, mtimeNanos: 1, size: 4096}
	b := observation{dev: 8, ino: 200, ctimeNanos: 2, mtimeNanos: 2, size: 4096}
	tr.beginScan()
	tr.observeName([]byte("/cores/a"), a, SourceRescan, epoch)
	tr.observeName([]byte("/cores/b"), b, SourceRescan, epoch)
	tr.sweep()
	tr.beginScan()
	tr.observeName([]byte("/cores/a"), a, SourcePoll, epoch.Add(time.Second))
	gone := tr.sweep()
	if len(gone) != 1 || gone[0] != "/cores/b" {
		t.Errorf("sweep returned %v, want the pending /cores/b", gone)
	}
	if _, ok := tr.files["/cores/b"]; ok {
		t.Error("/cores/b is still tracked")
	}
	if _, ok := tr.pending["/cores/b"]; ok {
		t.Error("/cores/b is still pending")
	}
	if _, ok := tr.files["/cores/a"]; !ok {
		t.Error("/cores/a was forgotten")
	}
}

// The emitted set forgets identities that have left the tree once they
// outnumber the files, and never one that is still there.
func TestEmittedIdentitiesAreBoundedByTheTree(t *testing.T) {
	tr := newTracker("/cores", time.Second, 10*time.Second)
	now := epoch
	emit := func(path string, o observation) {
		t.Helper()
		tr.observe(path, o, SourcePoll, now)
		now = now.Add(time.Second)
		tr.observe(path, o, SourcePoll, now)
		if _, ok := tr.judge(path, pidUnknown, now); !ok {
			t.Fatalf("%s was not emitted", path)
		}
	}
	kept := observation{dev: 8, ino: 1, ctimeNanos: 1, mtimeNanos: 1, size: 1}
	emit("/cores/kept", kept)
	const gone = 5000
	for i := range gone {
		p := fmt.Sprintf("/cores/gone-%d", i)
		emit(p, observation{dev: 8, ino: uint64(10 + i), ctimeNanos: int64(10 + i), size: 1})
		// The agent deleted it after upload and told the detector.
		tr.drop(p)
	}
	tr.beginScan()
	tr.observe("/cores/kept", kept, SourcePoll, now)
	tr.sweep()
	if n := len(tr.emitted); n > 2*len(tr.files)+1024 {
		t.Errorf("%d emitted identities kept for %d files", n, len(tr.files))
	}
	// The file that stayed is not emitted again, through another path
	// either.
	tr.drop("/cores/kept")
	tr.observe("/cores/kept", kept, SourcePoll, now)
	now = now.Add(time.Second)
	tr.observe("/cores/kept", kept, SourcePoll, now)
	if _, ok := tr.judge("/cores/kept", pidUnknown, now); ok {
		t.Error("a file still in the tree was emitted again after the emitted set was pruned")
	}
}

func TestEachDirent(t *testing.T) {
	dir := t.TempDir()
	want := map[string]bool{}
	for i := range 300 {
		name := fmt.Sprintf("core.%03d.with-a-longer-name-than-most", i)
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		want[name] = true
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	// Hidden names are skipped, files and directories alike.
	if err := os.WriteFile(filepath.Join(dir, ".core.1.cgroup"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, ".coredog"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := map[string]entryKind{}
	// A small buffer makes the listing take several reads.
	err := scanDir(dir, true, make([]byte, 1024), func(name []byte, e entry) {
		if _, dup := got[string(name)]; dup {
			t.Errorf("%s listed twice", name)
		}
		got[string(name)] = e.kind
		if e.kind == entryRegular && e.obs.size != 1 {
			t.Errorf("%s: size %d, want 1", name, e.obs.size)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range want {
		if got[name] != entryRegular {
			t.Errorf("%s: kind %d, want a regular file", name, got[name])
		}
	}
	if got["sub"] != entryDir || got["link"] != entryOther {
		t.Errorf("sub: %d, link: %d; want a directory and neither", got["sub"], got["link"])
	}
	if len(got) != len(want)+2 {
		t.Errorf("listed %d names, want %d", len(got), len(want)+2)
	}
	// The root may be a link; a directory below it may not.
	link := filepath.Join(t.TempDir(), "dirlink")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	if err := scanDir(link, true, make([]byte, 1024), func([]byte, entry) {}); err == nil {
		t.Error("scanDir followed a symbolic link with noFollow")
	}
	if err := scanDir(link, false, make([]byte, 1024), func([]byte, entry) {}); err != nil {
		t.Errorf("scanDir of the root through a link: %v", err)
	}
}
