package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	ctrl "sigs.k8s.io/controller-runtime"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentclient"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/internal/wire"
)

// Reasons the manager writes for a module it could not store. They are its
// own sentences: nothing an agent sent is quoted.
const (
	reasonModuleRefused  = "the agent's file does not have the build-id the core names; refused"
	reasonModuleNotThere = "the agent no longer serves the file"
	reasonModuleFailed   = "storing the file failed"
	// maxPathBytes is the API's bound of status.analysis.modules[].path.
	maxPathBytes = 4096
)

// StoreModules stores the module files the dump's agent collected, each
// build-id once per storage location, in the debuginfod layout under the
// location's prefix (buildid.Key), and returns the dump's modules as
// status.analysis.modules: Stored when the location holds the file (this
// dump's upload or an earlier one stored it), else Missing with the reason.
// Every file is checked against its build-id before it is stored. A module
// that cannot be stored does not fail the dump; an error means the agent's
// module list could not be read at all.
func (u *Uploader) StoreModules(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) ([]coredogv1.CrashModule, error) {
	timeout := u.StallTimeout
	if timeout <= 0 {
		timeout = DefaultStallTimeout
	}
	ctx, stop := watchStall(ctx, timeout)
	defer stop()
	_, store, err := u.open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	endpoint, err := u.endpoint(ctx, cd)
	if err != nil {
		return nil, err
	}
	ac, err := u.agentClient(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	list, err := ac.Modules(ctx, endpoint, cd.Spec.NodeName, cd.Name)
	if err != nil {
		return nil, err
	}
	if len(list) > coredogv1.MaxAnalysisModules {
		list = list[:coredogv1.MaxAnalysisModules]
	}
	out := make([]coredogv1.CrashModule, 0, len(list))
	for _, m := range list {
		cm := coredogv1.CrashModule{Path: safePath(m.Path), Start: fmt.Sprintf("%#x", m.Start), End: fmt.Sprintf("%#x", m.End), State: coredogv1.ModuleMissing}
		if buildid.Valid(m.BuildID) {
			cm.BuildID = m.BuildID
		}
		switch {
		case cm.BuildID == "":
			cm.Reason = wire.ModuleNoBuildID.Message()
		case isStored(ctx, store, cm.BuildID):
			cm.State = coredogv1.ModuleStored
		case !m.Collected:
			cm.Reason = m.Reason.Message()
		default:
			if err := u.storeModule(ctx, store, ac, endpoint, cd.Spec.NodeName, cm.BuildID); err != nil {
				ctrl.LoggerFrom(ctx).Info("Cannot store a module", "buildID", cm.BuildID, "err", err.Error())
				cm.Reason = moduleReason(err)
			} else {
				cm.State = coredogv1.ModuleStored
			}
		}
		if cm.State == coredogv1.ModuleStored {
			cm.Reason = ""
		}
		out = append(out, cm)
	}
	return out, nil
}

func moduleReason(err error) string {
	switch {
	case errors.Is(err, buildid.ErrMismatch), errors.Is(err, buildid.ErrNoBuildID), errors.Is(err, buildid.ErrNotELF),
		errors.Is(err, agentclient.ErrIntegrity):
		return reasonModuleRefused
	case errors.Is(err, agentclient.ErrNotServed):
		return reasonModuleNotThere
	}
	return reasonModuleFailed
}

// isStored reports whether the location holds a build-id's file.
func isStored(ctx context.Context, store storage.Store, id string) bool {
	_, err := store.Stat(ctx, buildid.Key(id, buildid.Executable))
	return err == nil
}

// storeModule checks the agent's file for id against id, through ranged
// reads, then streams it whole into the store (and once more as debuginfo
// when it has DWARF); the stream fails if it differs from what was checked.
func (u *Uploader) storeModule(ctx context.Context, store storage.Store, ac *agentclient.Client, endpoint, node, id string) error {
	mod, err := ac.Module(ctx, endpoint, node, id)
	if err != nil {
		return err
	}
	info, err := buildid.Verify(mod, mod.Size, id)
	if err != nil {
		return err
	}
	kinds := []string{buildid.Executable}
	if info.DebugInfo {
		kinds = append(kinds, buildid.DebugInfo)
	}
	for _, kind := range kinds {
		body, err := mod.Open()
		if err != nil {
			return err
		}
		_, err = store.Write(ctx, buildid.Key(id, kind), body, storage.WriteOptions{SizeHint: mod.Size, IfAbsent: true})
		body.Close()
		if err != nil && !errors.Is(err, storage.ErrExists) {
			return fmt.Errorf("storing %s: %w", buildid.Key(id, kind), err)
		}
	}
	return nil
}

// DeleteModules removes the stored files of build-ids no dump refers to
// any more (the caller decides which) from the policy's location.
func (u *Uploader) DeleteModules(ctx context.Context, p *coredogv1.CoreDumpPolicy, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	_, store, err := u.open(ctx, p)
	if err != nil {
		return err
	}
	defer store.Close()
	for _, id := range ids {
		if !buildid.Valid(id) {
			continue
		}
		// debuginfo first: an executable without debuginfo is a complete
		// entry, the other way round is not.
		for _, kind := range []string{buildid.DebugInfo, buildid.Executable} {
			if err := store.Delete(ctx, buildid.Key(id, kind)); err != nil {
				return fmt.Errorf("deleting %s: %w", buildid.Key(id, kind), err)
			}
		}
	}
	return nil
}

// safePath escapes a path from a core (the container's choice) as command
// lines are, and cuts it to the API's bound on a character boundary.
func safePath(p string) string {
	s := wire.SafeCommandLine(p)
	if len(s) <= maxPathBytes {
		return s
	}
	s = s[:maxPathBytes]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

var _ io.ReaderAt = (*agentclient.Module)(nil)
