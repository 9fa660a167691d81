package app

import (
	"os"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// done reports whether the node's copy of a dump may go.
func done(cd *coredogv1.CoreDump) bool {
	return cd.Status.Phase.NodeMayRelease()
}

// release deletes the local file of a dump and stops serving it.
func (a *Agent) release(name, why string) {
	entry, registered := a.registry.Get(name)
	a.registry.Remove(name)
	a.pending.remove(name)
	if !registered {
		return
	}
	if err := a.guard.DeleteFile(name); err != nil {
		a.log.Error(err, "Deleting a released core file", "name", name)
		return
	}
	_ = os.Remove(cgroupSidecar(entry.Path))
	a.detector.Forget(entry.Path)
	a.metrics.localBytes.Set(float64(a.guard.Usage()))
	a.log.Info("Deleted local core file", "name", name, "why", why)
}
