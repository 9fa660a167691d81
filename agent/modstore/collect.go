package modstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/wire"
)

// MaxPerCoreBytes bounds the bytes copied for one core.
const MaxPerCoreBytes = 2 << 30

// Collect copies the modules of a core (corefile.Core.Modules) from the
// mappings of process hostPID, as /proc/<hostPID>/map_files under procRoot
// opens them, into the store, and records the outcome of each as the
// manifest of the core named core. The process must still exist: in Pipe
// mode the kernel holds it until the receiver exits.
//
// map_files/<start>-<end> opens exactly the file that is mapped there, by
// the kernel's reference to it, whatever its path has become, and never
// resolves a path inside the container: /proc/<pid>/root/<path> would
// follow an absolute symbolic link the container planted to the host's own
// files. What is opened must be a regular file; it is kept only when its
// own build-id is the one the core names.
func (s *Store) Collect(procRoot string, hostPID int64, core string, mods []corefile.Module) (Manifest, error) {
	unlock, err := s.lock()
	if err != nil {
		return Manifest{}, err
	}
	defer unlock()
	var mapFiles *os.File
	if hostPID > 0 {
		mapFiles, err = os.OpenFile(filepath.Join(procRoot, strconv.FormatInt(hostPID, 10), "map_files"), os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			defer mapFiles.Close()
		}
	}
	var m Manifest
	var copied int64
	for i, mod := range mods {
		out := wire.Module{Path: mod.Path, BuildID: mod.BuildID, Start: mod.Start, End: mod.End}
		switch {
		case mod.BuildID == "" || !buildid.Valid(mod.BuildID):
			out.BuildID, out.Reason = "", wire.ModuleNoBuildID
		case i >= MaxPerCore:
			out.Reason = wire.ModuleTooMany
		case s.Has(mod.BuildID):
			out.Collected = true
		case mapFiles == nil:
			out.Reason = wire.ModuleProcessGone
		default:
			var n int64
			n, out.Reason = s.collectOne(mapFiles, mod, MaxPerCoreBytes-copied)
			copied += n
			out.Collected = out.Reason == ""
		}
		m.Modules = append(m.Modules, out)
	}
	return m, s.WriteManifest(core, m)
}

// collectOne copies one module; it returns the bytes copied and, when the
// module was not kept, why.
func (s *Store) collectOne(mapFiles *os.File, mod corefile.Module, budget int64) (int64, wire.ModuleReason) {
	name := fmt.Sprintf("%x-%x", mod.Mapping.Start, mod.Mapping.End)
	// Following this magic link is the point: it is the mapped file itself.
	fd, err := unix.Openat(int(mapFiles.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		return 0, wire.ModuleProcessGone
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return 0, wire.ModuleUnreadable
	}
	if st.Size > MaxFileBytes {
		return 0, wire.ModuleTooLarge
	}
	if st.Size > budget {
		return 0, wire.ModuleNodeLimit
	}
	err = s.add(mod.BuildID, f, st.Size)
	switch {
	case err == nil:
		return st.Size, ""
	case errors.Is(err, ErrTooLarge):
		return 0, wire.ModuleTooLarge
	case errors.Is(err, ErrNodeLimit):
		return 0, wire.ModuleNodeLimit
	case errors.Is(err, buildid.ErrMismatch), errors.Is(err, buildid.ErrNoBuildID), errors.Is(err, buildid.ErrNotELF):
		return 0, wire.ModuleMismatch
	}
	return 0, wire.ModuleUnreadable
}
