package nodeguard

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
)

// Options configure a Guard.
type Options struct {
	// Dir is the directory the kernel writes cores into; its file system is
	// the one measured for the free-space limits.
	Dir    string
	Limits Limits
	// Statfs measures Dir's file system. nil means Statfs.
	Statfs func(dir string) (FSStat, error)
	// InFlight is the number of bytes that cores still being written (by
	// the Pipe receivers) hold or may yet take; they count against
	// MaxUsage with the admitted files. nil means none.
	InFlight func() int64
}

// Guard keeps the core files the agent has admitted and enforces Limits when
// a new one arrives. It is safe for concurrent use.
type Guard struct {
	dir      string
	limits   Limits
	statfs   func(string) (FSStat, error)
	inFlight func() int64

	// mu also serialises Admit, so that two new cores never both count on the
	// same free space.
	mu    sync.Mutex
	files map[string]localFile
	// usage is the sum of the admitted files' sizes, kept up to date so that
	// admitting a core costs the same with ten thousand files kept as with
	// none.
	usage int64
}

// localFile is a core file on the node that the guard has admitted.
type localFile struct {
	path string
	size int64
}

// NewGuard returns a Guard with no files admitted.
func NewGuard(o Options) *Guard {
	g := &Guard{
		dir:      o.Dir,
		limits:   o.Limits,
		statfs:   o.Statfs,
		inFlight: o.InFlight,
		files:    make(map[string]localFile),
	}
	if g.statfs == nil {
		g.statfs = Statfs
	}
	return g
}

// put keeps f under name in place of any file of the same name. mu must be
// held.
func (g *Guard) put(name string, f localFile) {
	g.remove(name)
	g.files[name] = f
	g.usage += max(f.size, 0)
}

// remove forgets name, if it was kept. mu must be held.
func (g *Guard) remove(name string) {
	f, ok := g.files[name]
	if !ok {
		return
	}
	delete(g.files, name)
	g.usage -= max(f.size, 0)
}

// Usage is the number of bytes the admitted files use, the figure held
// against Limits.MaxUsage and reported as the agent's local bytes.
func (g *Guard) Usage() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.usage
}

// Admit decides whether the new core file at path, size bytes long, may stay.
// An admitted file is kept in the count until DeleteFile; a refused one is
// neither counted nor deleted, and reason says why: the caller records it on
// the CoreDump and removes the file. Admit never deletes a file.
//
// The kernel has already written the file, so the measured free space already
// lacks it. decide takes free space as it was before the new file and
// subtracts size, so Admit adds size back first; the two cancel and the
// free-space check is exactly "free space now". Adding back size rather than
// the blocks the file occupies keeps that exact even for sparse cores.
//
// A name that is already admitted is measured afresh in place of its old
// entry. err is set when the file system cannot be measured; the new file is
// then not admitted.
func (g *Guard) Admit(name, path string, size int64) (admitted bool, reason string, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()

	usage := g.usage
	if old, ok := g.files[name]; ok {
		usage -= max(old.size, 0)
	}
	if g.inFlight != nil {
		// Cores the receivers are still writing are not admitted yet, but
		// they are on the disk, or about to be.
		usage += max(g.inFlight(), 0)
	}
	var st FSStat
	if g.limits.needsFS() {
		st, err = g.statfs(g.dir)
		if err != nil {
			return false, "", fmt.Errorf("measuring free space for core %s: %w", name, err)
		}
		st.Free += size
	}
	if ok, reason := decide(usage, st, g.limits, size); !ok {
		return false, reason, nil
	}
	g.put(name, localFile{path: path, size: size})
	return true, "", nil
}

// DeleteFile removes name's file and stops counting it: the caller decides
// that its CoreDump is done with it. An unknown name and a file that is
// already gone are not errors, so that the CoreDump becoming Uploaded and
// then being deleted may both call it.
func (g *Guard) DeleteFile(name string) error {
	return g.DeleteFileIf(name, nil)
}

// DeleteFileIf is DeleteFile that first asks same, right before the file is
// removed, whether the file at its path is still the one the caller admitted
// (unchanged since it was captured). When same returns an error the file is
// left as it is, still counted, and the error is returned wrapped; an error
// that wraps fs.ErrNotExist means the file is gone, which is success. A nil
// same deletes unconditionally.
func (g *Guard) DeleteFileIf(name string, same func(path string) error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	f, ok := g.files[name]
	if !ok {
		return nil
	}
	if same != nil {
		if err := same(f.path); errors.Is(err, fs.ErrNotExist) {
			g.remove(name)
			return nil
		} else if err != nil {
			return fmt.Errorf("deleting core %s: %w", name, err)
		}
	}
	if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting core %s: %w", name, err)
	}
	g.remove(name)
	return nil
}

// Forget stops counting name's file without touching it: the file is no
// longer that name's (it changed, and a newer capture admitted it afresh).
func (g *Guard) Forget(name string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.remove(name)
}
