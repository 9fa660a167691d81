package receive

import (
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/agent/modstore"
)

// ModuleLimits are the bounds of the module store under a receiver
// configuration: a quarter of maxNodeUsage (the per-core cap, when set) and
// never the space minNodeFree keeps. The agent opens the store with the
// same bounds.
func ModuleLimits(cfg Config) modstore.Limits {
	return modstore.Limits{MaxBytes: cfg.MaxBytes / 4, MinFree: cfg.MinFree, MinFreePercent: cfg.MinFreePercent}
}

// collectModules reads the modules of the core just received at path and
// collects their files from the held process (modstore.Collect). The core
// is opened again relative to its directory, without following links, and
// must be the file the receiver wrote (root's, one link).
func collectModules(inst *hostdir.Dir, cfg Config, args []string, path string) error {
	fields, err := ParseArgs(args)
	if err != nil || cfg.ProcRoot == "" || path == "" {
		return err
	}
	host, err := hostdir.OpenShared(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer host.Close()
	f, err := host.OpenOwn(filepath.Base(path), unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	// A core cut short or damaged still lists the modules it got to.
	core, _ := corefile.ReadCore(f, st.Size())
	if core == nil || len(core.Modules) == 0 {
		return nil
	}
	store, err := modstore.Open(inst, ModuleLimits(cfg))
	if err != nil {
		return err
	}
	defer store.Close()
	if _, err := store.Collect(cfg.ProcRoot, fields.HostPID, filepath.Base(path), core.Modules); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}
