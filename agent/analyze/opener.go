package analyze

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ModuleRef names a mapped file as the core describes it.
type ModuleRef struct {
	// Path is the NT_FILE path, inside the crashed process's mount namespace.
	Path string
	// BuildID is the GNU build-id the core recorded for the mapping, hex.
	BuildID string
	// Start and End are the mapping's addresses (for /proc/<pid>/map_files).
	Start, End uint64
}

// Module is an opened module file. The analyzer checks its build-id against
// the core's before it reads anything else from it.
type Module interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Opener opens the file behind a mapping. It may return any file it likes:
// a module is used only when its build-id matches the core's.
type Opener interface {
	Open(ref ModuleRef) (Module, error)
}

// ErrDeleted: the mapped file was replaced or removed after it was mapped;
// whatever has its path now is another file.
var ErrDeleted = errors.New("the mapped file was deleted")

// osModule is an *os.File with its size.
type osModule struct {
	*os.File
	size int64
}

func (m osModule) Size() int64 { return m.size }

// HostRoot opens modules on the node: through /proc/<pid>/map_files while the
// crashed process exists, else at the mapping's path resolved inside Root as
// if Root were "/" (openat2 RESOLVE_IN_ROOT, no magic links, O_NOFOLLOW on the
// last component), so that a symbolic link the container made can never lead
// to a file of the host outside Root.
type HostRoot struct {
	// Root is the directory a mapping's path is relative to: "/" for host
	// processes, the container's root file system when it is known.
	Root string
	// ProcRoot is the host's /proc and PID the crashed process's host PID;
	// PID 0 skips map_files.
	ProcRoot string
	PID      int64
}

var _ Opener = HostRoot{}

// Open implements Opener.
func (h HostRoot) Open(ref ModuleRef) (Module, error) {
	if strings.HasSuffix(ref.Path, " (deleted)") {
		return nil, ErrDeleted
	}
	if !strings.HasPrefix(ref.Path, "/") {
		return nil, fmt.Errorf("mapping path %q is not absolute", ref.Path)
	}
	if h.ProcRoot != "" && h.PID > 0 && ref.End > ref.Start {
		p := filepath.Join(h.ProcRoot, strconv.FormatInt(h.PID, 10), "map_files",
			strconv.FormatUint(ref.Start, 16)+"-"+strconv.FormatUint(ref.End, 16))
		if m, err := openRegular(unix.AT_FDCWD, p, 0, false); err == nil {
			return m, nil
		}
	}
	if h.Root == "" {
		return nil, errors.New("no root to open modules in")
	}
	dir, err := unix.Open(h.Root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening root %s: %w", h.Root, err)
	}
	defer unix.Close(dir)
	return openRegular(dir, strings.TrimLeft(ref.Path, "/"), unix.RESOLVE_IN_ROOT|unix.RESOLVE_NO_MAGICLINKS, true)
}

// openRegular opens a regular file, with openat2 when resolve is set.
func openRegular(dir int, path string, resolve uint64, inRoot bool) (Module, error) {
	var fd int
	var err error
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK
	if inRoot {
		fd, err = unix.Openat2(dir, path, &unix.OpenHow{Flags: uint64(flags | unix.O_NOFOLLOW), Resolve: resolve})
	} else {
		fd, err = unix.Openat(dir, path, flags, 0)
	}
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, errors.New("not a regular file")
	}
	return osModule{File: f, size: st.Size()}, nil
}
