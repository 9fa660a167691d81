package controllers

import (
	"context"
	"slices"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

// indexDumpModule lists the build-ids a CoreDump holds Stored.
const indexDumpModule = "coredog.storedBuildID"

// ModuleStorer is what the CoreDump reconciler needs to keep module files
// by build-id: upload.Uploader, or a double in tests. A DumpUploader that
// is not one stores no modules.
type ModuleStorer interface {
	// StoreModules stores the dump's collected module files once per
	// build-id and returns its modules for status.analysis.modules.
	StoreModules(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) ([]coredogv1.CrashModule, error)
	// DeleteModules deletes the stored files of the given build-ids.
	DeleteModules(ctx context.Context, p *coredogv1.CoreDumpPolicy, ids []string) error
}

// noBacktraceReason is status.analysis.reason when the modules are the
// first part of the analysis written: the outcome is the unwinder's to set.
const noBacktraceReason = "no backtrace was computed for this dump"

// storeModules keeps the module files of a dump just uploaded and sets
// status.analysis.modules. Only that field changes (and analysis is made
// when there is none), so that the status patch, a merge patch from what
// the reconcile read, touches nothing else of the analysis. A failure is
// logged: the dump is stored, whatever became of its modules.
func (r *CoreDumpReconciler) storeModules(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) {
	ms, ok := r.Uploader.(ModuleStorer)
	if !ok {
		return
	}
	mods, err := ms.StoreModules(ctx, cd, p)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("Cannot list the modules of the dump; none are stored", "err", err.Error())
		return
	}
	if len(mods) == 0 {
		return
	}
	if cd.Status.Analysis == nil {
		cd.Status.Analysis = &coredogv1.CrashAnalysis{Outcome: coredogv1.AnalysisUnavailable, Reason: noBacktraceReason}
	}
	cd.Status.Analysis.Modules = mods
}

// storedBuildIDs are the build-ids a dump refers to in its storage location.
func storedBuildIDs(cd *coredogv1.CoreDump) []string {
	if cd.Status.Analysis == nil {
		return nil
	}
	var ids []string
	for _, m := range cd.Status.Analysis.Modules {
		if m.State == coredogv1.ModuleStored && m.BuildID != "" && !slices.Contains(ids, m.BuildID) {
			ids = append(ids, m.BuildID)
		}
	}
	return ids
}

// unreferenced is the build-ids of ids that none of others refers to in
// location loc. A dump refers to a build-id while it lists it Stored, its
// own storage is in loc, and it is not being deleted itself; gone is the
// dump whose deletion asks.
func unreferenced(ids []string, gone *coredogv1.CoreDump, others []coredogv1.CoreDump, loc *storage.Location) []string {
	held := map[string]bool{}
	for i := range others {
		o := &others[i]
		if o.UID == gone.UID || !o.DeletionTimestamp.IsZero() || o.Status.Storage == nil {
			continue
		}
		if _, ok := loc.StoredKey(o.Status.Storage.URL, o.Status.Storage.Key); !ok {
			continue
		}
		for _, id := range storedBuildIDs(o) {
			held[id] = true
		}
	}
	var out []string
	for _, id := range ids {
		if !held[id] {
			out = append(out, id)
		}
	}
	return out
}

// releaseModules deletes the stored module files of a dump being deleted
// that no remaining dump of its storage location refers to. The references
// are the CoreDumps' own status.analysis.modules, so they survive a manager
// restart.
func (r *CoreDumpReconciler) releaseModules(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) error {
	ms, ok := r.Uploader.(ModuleStorer)
	ids := storedBuildIDs(cd)
	if !ok || len(ids) == 0 || p == nil || cd.Status.Storage == nil {
		return nil
	}
	loc, err := storage.ParseURL(p.Spec.Storage.URL)
	if err != nil {
		return err
	}
	if _, ok := loc.StoredKey(cd.Status.Storage.URL, cd.Status.Storage.Key); !ok {
		// The policy's storage moved: the files are not where it points.
		return nil
	}
	var others []coredogv1.CoreDump
	for _, id := range ids {
		var list coredogv1.CoreDumpList
		if err := r.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingFields{indexDumpModule: id}); err != nil {
			return err
		}
		others = append(others, list.Items...)
	}
	return ms.DeleteModules(ctx, p, unreferenced(ids, cd, others, loc))
}
