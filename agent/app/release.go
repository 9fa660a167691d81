package app

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// done reports whether the node's copy of a dump may go.
func done(cd *coredogv1.CoreDump) bool {
	return cd.Status.Phase.NodeMayRelease()
}

// errChanged marks a file that is no longer the one captured: it grew, was
// written or touched, or another file took its place.
var errChanged = errors.New("the file changed after it was captured")

// release deletes the local file of a dump and stops serving it. A file
// that changed since it was captured is not deleted: its writer was not done
// (a core written with long pauses), and what was stored is only its start.
// It stays, uncounted under this name, and the detector, which sees its new
// identity, emits it again, to be captured in full under a CoreDump that
// supersedes this one.
func (a *Agent) release(name, why string) {
	entry, registered := a.registry.Get(name)
	a.pending.remove(name)
	if !registered {
		return
	}
	err := a.guard.DeleteFileIf(name, func(path string) error { return unchangedSince(path, entry) })
	a.registry.Remove(name)
	if errors.Is(err, errChanged) {
		a.guard.Forget(name)
		a.metrics.localBytes.Set(float64(a.guard.Usage()))
		a.log.Info("Keeping a core file that changed after it was captured; it is captured again as it is now",
			"name", name, "why", why, "file", entry.Path, "err", err.Error())
		return
	}
	if err != nil {
		a.log.Error(err, "Deleting a released core file", "name", name)
		return
	}
	_ = os.Remove(cgroupSidecar(entry.Path))
	a.releaseModules(entry.Path)
	a.detector.Forget(entry.Path)
	a.metrics.localBytes.Set(float64(a.guard.Usage()))
	a.log.Info("Deleted local core file", "name", name, "why", why)
}

// unchangedSince checks, on a descriptor opened without following a
// symbolic link, that the file at path is the regular file e describes, with
// the size, modification time and change time it had when it was captured.
// It is called right before the file is unlinked; the error wraps
// errChanged when the file changed, fs.ErrNotExist when it is gone.
func unchangedSince(path string, e serve.Entry) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("%w: a symbolic link is in its place", errChanged)
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("stat of %s: %w", path, err)
	}
	switch {
	case st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Dev != e.Device || st.Ino != e.Inode:
		return fmt.Errorf("%w: another file is in its place", errChanged)
	case st.Size != e.Size:
		return fmt.Errorf("%w: %d bytes, %d when captured", errChanged, st.Size, e.Size)
	case st.Mtim.Nano() != e.ModTimeNanos || st.Ctim.Nano() != e.CtimeNanos:
		return fmt.Errorf("%w: modified or changed since", errChanged)
	}
	return nil
}

// removeIfUnchanged deletes path if it is still the file e describes.
func removeIfUnchanged(path string, e serve.Entry) error {
	if err := unchangedSince(path, e); err != nil {
		return err
	}
	return os.Remove(path)
}
