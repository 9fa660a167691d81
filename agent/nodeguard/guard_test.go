package nodeguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
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
	write int    // write a core of this size named name, then Admit it
	del   bool   // DeleteFile(name)
	name  string // the core the step is about

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
				// d is refused but Admit leaves it for the caller to remove,
				// and deletes nothing else to make room.
				{name: "d", write: 1000, wantReason: "maxNodeUsage", wantUsage: 3000},
				{name: "b", del: true, wantGone: []string{"b"}, wantUsage: 2000},
				{name: "b", del: true, wantGone: []string{"b"}, wantUsage: 2000},
				{name: "d", write: 1000, wantAdmit: true, wantGone: []string{"b"}, wantUsage: 3000},
			},
		},
		{
			// Usage is kept as a running total: a name admitted again is
			// counted once, with its new size.
			name:     "admitting a kept name again replaces it",
			limits:   Limits{MaxUsage: 1000},
			capacity: 1 << 40,
			steps: []step{
				{name: "a", write: 1000, wantAdmit: true, wantUsage: 1000},
				{name: "a", write: 500, wantAdmit: true, wantUsage: 500},
				{name: "b", write: 600, wantReason: "maxNodeUsage", wantUsage: 500},
				{name: "b", write: 500, wantAdmit: true, wantUsage: 1000},
				{name: "a", del: true, wantGone: []string{"a"}, wantUsage: 500},
			},
		},
		{
			// The new file is already on the fake disk when Admit measures
			// it; counting it a second time would refuse c.
			name:     "minFree counts the new file once",
			limits:   Limits{MinFree: 4000},
			capacity: 10000,
			steps: []step{
				{name: "a", write: 2000, wantAdmit: true, wantUsage: 2000},
				{name: "b", write: 2000, wantAdmit: true, wantUsage: 4000},
				{name: "c", write: 2000, wantAdmit: true, wantUsage: 6000}, // free now exactly 4000
				{name: "d", write: 1000, wantReason: "minNodeFree", wantUsage: 6000},
			},
		},
		{
			name:     "minFreePercent",
			limits:   Limits{MinFreePercent: 50},
			capacity: 10000,
			steps: []step{
				{name: "a", write: 2000, wantAdmit: true, wantUsage: 2000},
				{name: "b", write: 2000, wantAdmit: true, wantUsage: 4000},
				{name: "c", write: 1500, wantReason: "minNodeFree (50% = 4.9Ki)", wantUsage: 4000},
				{name: "a", del: true, wantGone: []string{"a"}, wantUsage: 2000},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			g := NewGuard(Options{Dir: dir, Limits: tt.limits, Statfs: fakeDisk(tt.capacity)})
			written := map[string]bool{}
			for i, s := range tt.steps {
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
					written[s.name] = true
				case s.del:
					if err := g.DeleteFile(s.name); err != nil {
						t.Fatalf("%s: DeleteFile: %v", desc, err)
					}
				}
				for name := range written {
					if want, got := !slices.Contains(s.wantGone, name), exists(t, filepath.Join(dir, name)); got != want {
						t.Errorf("%s: %s on disk = %v, want %v", desc, name, got, want)
					}
				}
				if got := g.Usage(); got != s.wantUsage {
					t.Errorf("%s: Usage = %d, want %d", desc, got, s.wantUsage)
				}
			}
		})
	}
}

func TestGuardNeverDeletesToMakeRoom(t *testing.T) {
	dir := t.TempDir()
	g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: 500, MinFree: 1 << 40}, Statfs: fakeDisk(1 << 30)})
	var paths []string
	for i := range 3 {
		name := fmt.Sprintf("new-%d", i)
		p := writeCore(t, dir, name, 100)
		paths = append(paths, p)
		admit, reason, err := g.Admit(name, p, 100)
		if err != nil || admit || reason == "" {
			t.Fatalf("Admit(%s) = %v, %q, %v; want a refusal", name, admit, reason, err)
		}
	}
	for _, p := range paths {
		if !exists(t, p) {
			t.Errorf("%s was deleted by Admit", p)
		}
	}
	if g.Usage() != 0 {
		t.Errorf("Usage = %d, want 0: refused files are not counted", g.Usage())
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
			t.Errorf("a failed Admit kept the file")
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
}

func TestGuardDeleteFile(t *testing.T) {
	t.Run("an unknown name is not an error", func(t *testing.T) {
		g := NewGuard(Options{Dir: t.TempDir()})
		if err := g.DeleteFile("a"); err != nil {
			t.Errorf("DeleteFile of a name never admitted: %v", err)
		}
	})
	t.Run("a file that is already gone is forgotten", func(t *testing.T) {
		dir := t.TempDir()
		g := NewGuard(Options{Dir: dir})
		if admit, _, err := g.Admit("gone", filepath.Join(dir, "gone"), 100); err != nil || !admit {
			t.Fatalf("Admit = %v, %v", admit, err)
		}
		if err := g.DeleteFile("gone"); err != nil {
			t.Fatalf("DeleteFile: %v", err)
		}
		if g.Usage() != 0 {
			t.Errorf("Usage = %d, want 0", g.Usage())
		}
	})
	t.Run("a file that cannot be deleted stays counted", func(t *testing.T) {
		dir := t.TempDir()
		// A non-empty directory cannot be removed, even by root.
		stuck := filepath.Join(dir, "stuck")
		if err := os.MkdirAll(filepath.Join(stuck, "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		g := NewGuard(Options{Dir: dir})
		if admit, _, err := g.Admit("stuck", stuck, 100); err != nil || !admit {
			t.Fatalf("Admit = %v, %v", admit, err)
		}
		if err := g.DeleteFile("stuck"); err == nil {
			t.Errorf("DeleteFile of a directory with contents succeeded")
		}
		if g.Usage() != 100 {
			t.Errorf("Usage = %d, want 100: stuck stays counted", g.Usage())
		}
	})
}

func TestGuardDeleteFileIf(t *testing.T) {
	errChanged := errors.New("changed since it was captured")
	for _, tc := range []struct {
		name      string
		same      error
		wantErr   error
		wantFile  bool
		wantUsage int64
	}{
		{name: "unchanged: deleted", wantUsage: 0},
		{name: "changed: kept and still counted", same: errChanged, wantErr: errChanged, wantFile: true, wantUsage: 10},
		{name: "gone: forgotten", same: fmt.Errorf("opening: %w", fs.ErrNotExist), wantFile: true, wantUsage: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := writeCore(t, dir, "a", 10)
			g := NewGuard(Options{Dir: dir})
			if admit, _, err := g.Admit("a", path, 10); err != nil || !admit {
				t.Fatalf("Admit = %v, %v", admit, err)
			}
			var asked string
			err := g.DeleteFileIf("a", func(p string) error { asked = p; return tc.same })
			if asked != path {
				t.Errorf("same was asked about %q, want %q", asked, path)
			}
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Errorf("DeleteFileIf = %v, want %v", err, tc.wantErr)
			}
			_, statErr := os.Stat(path)
			if exists := statErr == nil; exists != tc.wantFile {
				t.Errorf("file exists = %v, want %v", exists, tc.wantFile)
			}
			if g.Usage() != tc.wantUsage {
				t.Errorf("Usage = %d, want %d", g.Usage(), tc.wantUsage)
			}
		})
	}
	t.Run("Forget stops counting and leaves the file", func(t *testing.T) {
		dir := t.TempDir()
		path := writeCore(t, dir, "a", 10)
		g := NewGuard(Options{Dir: dir})
		if admit, _, err := g.Admit("a", path, 10); err != nil || !admit {
			t.Fatalf("Admit = %v, %v", admit, err)
		}
		g.Forget("a")
		g.Forget("never admitted")
		if _, err := os.Stat(path); err != nil || g.Usage() != 0 {
			t.Errorf("after Forget: stat %v, Usage %d; want the file, 0", err, g.Usage())
		}
		if err := g.DeleteFile("a"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("DeleteFile of a forgotten name touched the file: %v", err)
		}
	})
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
				if admit && i%3 == 0 {
					if err := g.DeleteFile(name); err != nil {
						t.Error(err)
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestGuardCountsCoresInFlight: bytes that Pipe receivers are still writing
// count against maxNodeUsage with the admitted files, so that a core that
// fits alone is refused beside them.
func TestGuardCountsCoresInFlight(t *testing.T) {
	tests := []struct {
		name       string
		inFlight   int64
		size       int64
		wantAdmit  bool
		wantReason string
	}{
		{name: "nothing in flight", inFlight: 0, size: 600, wantAdmit: true},
		{name: "fits beside what is in flight", inFlight: 300, size: 600, wantAdmit: true},
		{name: "over maxNodeUsage with what is in flight", inFlight: 500, size: 600, wantReason: "maxNodeUsage"},
		{name: "a negative count is none", inFlight: -5000, size: 1000, wantAdmit: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			g := NewGuard(Options{Dir: dir, Limits: Limits{MaxUsage: 1000}, InFlight: func() int64 { return tt.inFlight }})
			path := writeCore(t, dir, "core", int(tt.size))
			ok, reason, err := g.Admit("core", path, tt.size)
			if err != nil || ok != tt.wantAdmit || !strings.Contains(reason, tt.wantReason) {
				t.Fatalf("Admit = %v, %q, %v; want %v, %q", ok, reason, err, tt.wantAdmit, tt.wantReason)
			}
			// What is in flight is not the guard's: its usage holds admitted files only.
			if want := map[bool]int64{true: tt.size, false: 0}[ok]; g.Usage() != want {
				t.Fatalf("Usage = %d, want %d", g.Usage(), want)
			}
		})
	}
}
