package nodeguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// Options configure a Guard.
type Options struct {
	// Dir is the directory the kernel writes cores into; its file system is
	// the one measured for the free-space limits.
	Dir    string
	Limits Limits
	// Statfs measures Dir's file system. nil means Statfs.
	Statfs func(dir string) (FSStat, error)
	// Clock stamps LocalFile.Added. nil means the real clock.
	Clock  clock.PassiveClock
	Logger logr.Logger
}

// Guard tracks the core files the agent has registered and enforces Limits
// when a new one arrives. It is safe for concurrent use.
type Guard struct {
	dir    string
	limits Limits
	statfs func(string) (FSStat, error)
	clock  clock.PassiveClock
	log    logr.Logger

	// mu also serialises Admit, so that two new cores never both count on the
	// same free space.
	mu    sync.Mutex
	files map[string]LocalFile
	// usage is the sum of the tracked files' sizes and uploaded the number
	// of them marked Uploaded, kept up to date so that admitting a core
	// costs the same with ten thousand files tracked as with none.
	usage    int64
	uploaded int
}

// NewGuard returns a Guard with no files tracked.
func NewGuard(o Options) *Guard {
	g := &Guard{
		dir:    o.Dir,
		limits: o.Limits,
		statfs: o.Statfs,
		clock:  o.Clock,
		log:    o.Logger,
		files:  make(map[string]LocalFile),
	}
	if g.statfs == nil {
		g.statfs = Statfs
	}
	if g.clock == nil {
		g.clock = clock.RealClock{}
	}
	if g.log.GetSink() == nil {
		g.log = logr.Discard()
	}
	return g
}

// Track registers a file without checking the limits, for files found at
// start that are already on the disk anyway. A zero Added is set to now. A
// file with the same Name replaces the old entry.
func (g *Guard) Track(f LocalFile) {
	if f.Added.IsZero() {
		f.Added = g.clock.Now()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.put(f)
}

// put tracks f in place of any file of the same name. mu must be held.
func (g *Guard) put(f LocalFile) {
	g.remove(f.Name)
	g.files[f.Name] = f
	g.usage += max(f.Size, 0)
	if f.Uploaded {
		g.uploaded++
	}
}

// remove stops tracking name, if it was. mu must be held.
func (g *Guard) remove(name string) {
	f, ok := g.files[name]
	if !ok {
		return
	}
	delete(g.files, name)
	g.usage -= max(f.Size, 0)
	if f.Uploaded {
		g.uploaded--
	}
}

// MarkUploaded records that name's CoreDump is Uploaded or Skipped, so that
// its file may be deleted to make room. It reports whether name is tracked.
func (g *Guard) MarkUploaded(name string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.files[name]
	if ok && !f.Uploaded {
		f.Uploaded = true
		g.files[name] = f
		g.uploaded++
	}
	return ok
}

// Untrack forgets name without touching its file, for a file that someone
// else removed.
func (g *Guard) Untrack(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.remove(name)
}

// Usage is the number of bytes the tracked files use, the figure held
// against Limits.MaxUsage.
func (g *Guard) Usage() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.usage
}

// LocalBytes is Usage under the name of the coredog_agent_local_bytes gauge,
// so that the metric can be a GaugeFunc on it.
func (g *Guard) LocalBytes() int64 { return g.Usage() }

// Admit decides whether the new core file at path, size bytes long, may stay,
// first deleting the uploaded cores Plan picks. An admitted file is tracked;
// a refused one is neither tracked nor deleted, and reason says why: the
// caller records it on the CoreDump and removes the file.
//
// The kernel has already written the file, so the measured free space already
// lacks it. Plan takes free space as it was before the new file and subtracts
// size, so Admit adds size back first; the two cancel and the free-space check
// is exactly "free space now, after the deletions". Adding back size rather
// than the blocks the file occupies keeps that exact even for sparse cores.
//
// A name that is already tracked is measured afresh in place of its old entry.
// err is set when the file system cannot be measured or a planned deletion
// fails; the new file is then not admitted.
func (g *Guard) Admit(name, path string, size int64) (admitted bool, reason string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()

	// Only uploaded files can be deleted to make room; the others count
	// through their total alone.
	usage := g.usage
	if old, ok := g.files[name]; ok {
		usage -= max(old.Size, 0)
	}
	var candidates []LocalFile
	if g.uploaded > 0 {
		for _, f := range g.files {
			if f.Uploaded && f.Name != name {
				candidates = append(candidates, f)
			}
		}
	}
	var st FSStat
	if g.limits.needsFS() {
		st, err = g.statfs(g.dir)
		if err != nil {
			return false, "", fmt.Errorf("measuring free space for core %s: %w", name, err)
		}
		st.Free += size
	}

	deleteFirst, ok, reason := plan(usage, candidates, st, g.limits, size)
	if !ok {
		return false, reason, nil
	}
	var errs []error
	for _, f := range deleteFirst {
		if err := removeFile(f.Path); err != nil {
			errs = append(errs, fmt.Errorf("deleting uploaded core %s: %w", f.Name, err))
			continue
		}
		g.remove(f.Name)
		g.log.Info("Deleted uploaded core to make room", "name", f.Name, "path", f.Path, "size", f.Size, "for", name)
	}
	if len(errs) > 0 {
		// The plan counted on that space; without it the limits may not hold.
		return false, "", fmt.Errorf("making room for core %s: %w", name, errors.Join(errs...))
	}
	g.put(LocalFile{Name: name, Path: path, Size: size, Added: g.clock.Now()})
	return true, "", nil
}

// DeleteFile removes name's file and stops tracking it, whether or not it was
// uploaded: the caller decides that its CoreDump is done with it. An unknown
// name and a file that is already gone are not errors, so that the CoreDump
// becoming Uploaded and then being deleted may both call it.
func (g *Guard) DeleteFile(name string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.files[name]
	if !ok {
		return nil
	}
	if err := removeFile(f.Path); err != nil {
		return fmt.Errorf("deleting core %s: %w", name, err)
	}
	g.remove(name)
	return nil
}

func removeFile(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
