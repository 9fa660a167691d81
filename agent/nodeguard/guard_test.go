package nodeguard

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"
)

// fakeDisk is a file system of capacity bytes whose free space is what the
// regular files in dir leave, so that deleting a real file really frees space
// and a file the "kernel" wrote is already missing from Free, as on a node.
func fakeDisk(capacity int64) func(dir string) (FSStat, error) {
	return func(dir string) (FSStat, error) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			return FSStat{}, err
		}
		free := capacity
		for _, e := range entries {
			if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
				free -= info.Size()
			}
		}
		return FSStat{Total: capacity, Free: free}, nil
	}
}

// writeCore plays the kernel: the file exists before the agent hears of it.
func writeCore(t *testing.T, dir, name string, size int) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Lstat(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

// step is one event in a Guard's life; exactly one of its actions is set.
type step struct {
	write    int    // write a core of this size named name, then Admit it
	track    int    // write a core of this size named name, then Track it
	uploaded bool   // MarkUploaded(name)
	del      bool   // DeleteFile(name)
	name     string // the core the step is about

	wantAdmit  bool
	wantReason string   // substring of a refusal
	wantGone   []string // files that must no longer be on disk after the step
	wantUsage  int64
}

func TestGuard(t *testing.T) {
	tests := []struct {
		name     string
		limits   Limits
		capacity int64
		steps    []step
	}{
		{
			name:     "maxUsage",
			limits:   Limits{MaxUsage: 3000},
			capacity: 1 << 40,
			steps: []step{
				{name: "a", write: 1000, wantAdmit: true, wantUsage: 1000},
				{name: "b", write: 1000, wantAdmit: true, wantUsage: 2000},
				{name: "c", write: 1000, wantAdmit: true, wantUsage: 3000},
				{name: "c", uploaded: true, wantUsage: 3000},
				{name: "a", uploaded: true, wantUsage: 3000},
				// a is older than c, so a goes first; b is not uploaded and stays.
				{name: "d", write: 1000, wantAdmit: true, wantGone: []string{"a"}, wantUsage: 3000},
				{name: "e", write: 1000, wantAdmit: true, wantGone: []string{"a", "c"}, wantUsage: 3000},
				// Only b, d and e are left and none is uploaded: f is refused
				// but Admit leaves it for the caller to remove.
				{name: "f", write: 1000, wantReason: "maxNodeUsage", wantGone: []string{"a", "c"}, wantUsage: 3000},
				{name: "b", del: true, wantGone: []string{"a", "b", "c"}, wantUsage: 2000},
				{name: "b", del: true, wantGone: []string{"a", "b", "c"}, wantUsage: 2000},
				{name: "f", write: 1000, wantAdmit: true, wantGone: []string{"a", "b", "c"}, wantUsage: 3000},
			},
		},
		{
			// Usage is kept as a running total: a name admitted again is
			// counted once, with its new size, and is no longer uploaded.
			name:     "admitting a tracked name again replaces it",
			limits:   Limits{MaxUsage: 1000},
			capacity: 1 << 40,
			steps: []step{
				{name: "a", write: 1000, wantAdmit: true, wantUsage: 1000},
				{name: "a", uploaded: true, wantUsage: 1000},
				{name: "a", uploaded: true, wantUsage: 1000},
				{name: "a", write: 500, wantAdmit: true, wantUsage: 500},
				{name: "b", write: 600, wantReason: "maxNodeUsage", wantUsage: 500},
				{name: "b", write: 500, wantAdmit: true, wantUsage: 1000},
				{name: "a", del: true, wantGone: []string{"a"}, wantUsage: 500},
			},
		},
		{
			// The new file is already on the fake disk when Admit measures
			// it; counting it a second time would delete a or refuse c.
			name:     "minFree counts the new file once",
			limits:   Limits{MinFree: 4000},
			capacity: 10000,
			steps: []step{
				{name: "a", track: 2000, wantUsage: 2000},
				{name: "a", uploaded: true, wantUsage: 2000},
				{name: "b", track: 2000, wantUsage: 4000},
				{name: "c", write: 2000, wantAdmit: true, wantUsage: 6000}, // free now exactly 4000
				{name: "d", write: 1000, wantAdmit: true, wantGone: []string{"a"}, wantUsage: 5000},
				{name: "e", write: 1000, wantAdmit: true, wantGone: []string{"a"}, wantUsage: 6000},
				{name: "f", write: 1000, wantReason: "minNodeFree", wantGone: []string{"a"}, wantUsage: 6000},
			},
		},
		{
			name:     "minFreePercent",
			limits:   Limits{MinFreePercent: 50},
			capacity: 10000,
			steps: []step{
				{name: "a", write: 2000, wantAdmit: true, wantUsage: 2000},
				{name: "b", write: 2000, wantAdmit: true, wantUsage: 4000},
				{name: "a", uploaded: true, wantUsage: 4000},
				{name: "b", uploaded: true, wantUsage: 4000},
				{name: "c", write: 4000, wantAdmit: true, wantGone: []string{"a", "b"}, wantUsage: 4000},
				{name: "d", write: 1500, wantReason: "minNodeFree (50% = 4.9Ki)", wantGone: []string{"a", "b"}, wantUsage: 4000},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clk := testingclock.NewFakePassiveClock(t0)
			g := NewGuard(Options{Dir: dir, Limits: tt.limits, Statfs: fakeDisk(tt.capacity), Clock: clk})
			everUploaded := map[string]bool{}
			written := map[string]bool{}
			for i, s := range tt.steps {
				clk.SetTime(clk.Now().Add(time.Second))
				desc := fmt.Sprintf("step %d (%s)", i, s.name)
				switch {
				case s.write > 0:
					path := writeCore(t, dir, s.name, s.write)
					admit, reason, err := g.Admit(s.name, path, int64(s.write))
					if err != nil {
						t.Fatalf("%s: Admit: %v", desc, err)
					}
					if admit != s.wantAdmit || !strings.Contains(reason, s.wantReason) || (admit && reason != "") {
						t.Errorf("%s: Admit = %v, %q; want %v, %q", desc, admit, reason, s.wantAdmit, s.wantReason)
					}
					if !exists(t, path) {
						t.Errorf("%s: Admit removed the new file", desc)
					}
				case s.track > 0:
					g.Track(LocalFile{Name: s.name, Path: writeCore(t, dir, s.name, s.track), Size: int64(s.track)})
				case s.uploaded:
					everUploaded[s.name] = true
					if !g.MarkUploaded(s.name) {
						t.Fatalf("%s: MarkUploaded: not tracked", desc)
					}
				case s.del:
					if err := g.DeleteFile(s.name); err != nil {
						t.Fatalf("%s: DeleteFile: %v", desc, err)
					}
				}

				if s.write > 0 || s.track > 0 {
					written[s.name] = true
				}
				for name := range written {
					if want, got := !slices.Contains(s.wantGone, name), exists(t, filepath.Join(dir, name)); got != want {
						t.Errorf("%s: %s on disk = %v, want %v", desc, name, got, want)
					}
				}
				for _, gone := range s.wantGone {
					if !everUploaded[gone] && !(s.del && gone == s.name) && !deletedEarlier(tt.steps[:i], gone) {
						t.Errorf("%s: %s was removed but never uploaded", desc, gone)
					}
				}
				if got := g.Usage(); got != s.wantUsage {
					t.Errorf("%s: Usage = %d, want %d", desc, got, s.wantUsage)
				}
				if g.LocalBytes() != g.Usage() {
					t.Errorf("%s: LocalBytes %d != Usage %d", desc, g.LocalBytes(), g.Usage())
				}
			}
		})
	}
}

func deletedEarlier(steps []step, name string) bool {
	for _, s := range steps {
		if s.del && s.name == name {
			return true
		}
	}
	return false
}

func TestGuardNeverDeletesFilesNotUploaded(t *testing.T) {
	dir := t.TempDir()
	g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: 1, MinFree: 1 << 40}, Statfs: fakeDisk(1 << 30)})
	var paths []string
	for i := range 5 {
		name := fmt.Sprintf("pending-%d", i)
		p := writeCore(t, dir, name, 100)
		paths = append(paths, p)
		g.Track(LocalFile{Name: name, Path: p, Size: 100})
	}
	for i := range 3 {
		name := fmt.Sprintf("new-%d", i)
		admit, reason, err := g.Admit(name, writeCore(t, dir, name, 100), 100)
		if err != nil || admit || reason == "" {
			t.Fatalf("Admit(%s) = %v, %q, %v; want a refusal", name, admit, reason, err)
		}
	}
	for _, p := range paths {
		if !exists(t, p) {
			t.Errorf("%s was deleted although it was never uploaded", p)
		}
	}
}

func TestGuardAdmitErrors(t *testing.T) {
	t.Run("statfs fails", func(t *testing.T) {
		dir := t.TempDir()
		boom := errors.New("boom")
		g := NewGuard(Options{Dir: dir, Limits: Limits{MinFreePercent: 5},
			Statfs: func(string) (FSStat, error) { return FSStat{}, boom }})
		admit, _, err := g.Admit("a", writeCore(t, dir, "a", 10), 10)
		if !errors.Is(err, boom) || admit {
			t.Fatalf("Admit = %v, %v; want the statfs error", admit, err)
		}
		if g.Usage() != 0 {
			t.Errorf("a failed Admit tracked the file")
		}
	})
	t.Run("statfs is not needed without free-space limits", func(t *testing.T) {
		dir := t.TempDir()
		g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: 100},
			Statfs: func(string) (FSStat, error) { return FSStat{}, errors.New("must not be called") }})
		if admit, _, err := g.Admit("a", writeCore(t, dir, "a", 10), 10); err != nil || !admit {
			t.Fatalf("Admit = %v, %v", admit, err)
		}
	})
	t.Run("a planned file that is already gone is fine", func(t *testing.T) {
		dir := t.TempDir()
		g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: 100}, Statfs: fakeDisk(1 << 30)})
		g.Track(LocalFile{Name: "gone", Path: filepath.Join(dir, "gone"), Size: 100, Uploaded: true})
		if admit, _, err := g.Admit("a", writeCore(t, dir, "a", 10), 10); err != nil || !admit {
			t.Fatalf("Admit = %v, %v", admit, err)
		}
		if g.Usage() != 10 {
			t.Errorf("Usage = %d, want 10: the gone file should be untracked", g.Usage())
		}
	})
	t.Run("a planned deletion that fails refuses the new file", func(t *testing.T) {
		dir := t.TempDir()
		// A non-empty directory cannot be removed, even by root.
		stuck := filepath.Join(dir, "stuck")
		if err := os.MkdirAll(filepath.Join(stuck, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: 100}})
		g.Track(LocalFile{Name: "stuck", Path: stuck, Size: 100, Uploaded: true})
		admit, _, err := g.Admit("a", writeCore(t, dir, "a", 10), 10)
		if err == nil || admit {
			t.Fatalf("Admit = %v, %v; want an error", admit, err)
		}
		if g.Usage() != 100 {
			t.Errorf("Usage = %d, want 100: stuck stays tracked and a is not admitted", g.Usage())
		}
		if err := g.DeleteFile("stuck"); err == nil {
			t.Errorf("DeleteFile of a directory with contents succeeded")
		}
	})
}

func TestGuardTrackAndUntrack(t *testing.T) {
	clk := testingclock.NewFakePassiveClock(t0)
	g := NewGuard(Options{Dir: t.TempDir(), Clock: clk})
	g.Track(LocalFile{Name: "a", Path: "/nonexistent/a", Size: 5})
	if f := g.files["a"]; !f.Added.Equal(t0) {
		t.Errorf("Added = %v, want the clock's %v", f.Added, t0)
	}
	g.Track(LocalFile{Name: "a", Path: "/nonexistent/a", Size: 7})
	if g.Usage() != 7 {
		t.Errorf("Usage = %d after re-tracking, want 7", g.Usage())
	}
	if g.MarkUploaded("unknown") {
		t.Errorf("MarkUploaded of an unknown name reported success")
	}
	g.Untrack("a")
	if g.Usage() != 0 {
		t.Errorf("Usage = %d after Untrack, want 0", g.Usage())
	}
	if err := g.DeleteFile("a"); err != nil {
		t.Errorf("DeleteFile of an untracked name: %v", err)
	}
}

// TestGuardConcurrent is for the race detector: admissions from many
// goroutines must never together break the limit.
func TestGuardConcurrent(t *testing.T) {
	dir := t.TempDir()
	const size, maxUsage = 10, 100
	g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: maxUsage}, Statfs: fakeDisk(1 << 30)})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 20 {
				name := fmt.Sprintf("w%d-%d", w, i)
				path := filepath.Join(dir, name)
				if err := os.WriteFile(path, make([]byte, size), 0o600); err != nil {
					t.Error(err)
					return
				}
				admit, _, err := g.Admit(name, path, size)
				if err != nil {
					t.Error(err)
					return
				}
				if u := g.Usage(); u > maxUsage {
					t.Errorf("Usage = %d, over %d", u, maxUsage)
				}
				if admit && i%2 == 0 {
					g.MarkUploaded(name)
				} else if admit && i%3 == 0 {
					if err := g.DeleteFile(name); err != nil {
						t.Error(err)
					}
				}
				_ = g.LocalBytes()
			}
		})
	}
	wg.Wait()
}
