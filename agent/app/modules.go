package app

import (
	"fmt"
	"path/filepath"

	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/detect"
	"github.com/coredog/coredog/agent/modstore"
	"github.com/coredog/coredog/agent/receive"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/wire"
)

// openModuleStore opens the store the receivers collect module files into,
// with the bounds they use.
func openModuleStore(cfg Config, set settings) (*modstore.Store, error) {
	inst, err := receive.OpenInstallDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer inst.Close()
	s, err := modstore.Open(inst, receive.ModuleLimits(receive.Config{
		MaxBytes: set.limits.MaxUsage, MinFree: set.limits.MinFree, MinFreePercent: set.limits.MinFreePercent,
	}))
	if err != nil {
		return nil, fmt.Errorf("opening the module store: %w", err)
	}
	return s, nil
}

// Modules opens the module files collected on this node by build-id, for
// the node's unwinder; nil when the agent collects none (Observe, Manage).
func (a *Agent) Modules() *modstore.Store { return a.modules }

// modulesOf lists the modules of a captured core: the receiver's manifest
// when it collected them (Pipe mode), checked against the store, else the
// core's modules, none collected.
func (a *Agent) modulesOf(f detect.File, core *corefile.Core) []wire.Module {
	if a.modules != nil {
		m, ok, err := a.modules.ReadManifest(filepath.Base(f.Path))
		if err != nil {
			a.log.Info("Cannot read the module manifest of a core", "file", f.RelPath, "err", err.Error())
		}
		if ok {
			return a.checked(m.Modules)
		}
	}
	if core == nil {
		return nil
	}
	out := make([]wire.Module, 0, len(core.Modules))
	for _, mod := range core.Modules {
		wm := wire.Module{Path: mod.Path, BuildID: mod.BuildID, Start: mod.Start, End: mod.End, Reason: wire.ModuleNotCollected}
		if !buildid.Valid(mod.BuildID) {
			wm.BuildID, wm.Reason = "", wire.ModuleNoBuildID
		}
		out = append(out, wm)
	}
	return out
}

// checked keeps a manifest's claims that the store bears out, at most
// MaxModules of them.
func (a *Agent) checked(mods []wire.Module) []wire.Module {
	if len(mods) > corefile.MaxModules {
		mods = mods[:corefile.MaxModules]
	}
	out := make([]wire.Module, 0, len(mods))
	for _, m := range mods {
		if !buildid.Valid(m.BuildID) {
			m.BuildID, m.Collected = "", false
		}
		if m.Collected && !a.modules.Has(m.BuildID) {
			m.Collected, m.Reason = false, wire.ModuleUnreadable
		}
		out = append(out, m)
	}
	return out
}

// releaseModules forgets the modules of a released core, and removes the
// files no other core on the node still lists.
func (a *Agent) releaseModules(path string) {
	if a.modules == nil {
		return
	}
	if err := a.modules.Release(filepath.Base(path)); err != nil {
		a.log.Info("Cannot release the module files of a core", "file", path, "err", err.Error())
	}
}
