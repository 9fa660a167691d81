package bench

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/scheme"
)

// dumpSeen is when the benchmark process saw a CoreDump reach each phase,
// by its own clock (the API's timestamps have one-second resolution).
type dumpSeen struct {
	Name, Policy, Node, File string
	Size                     int64
	Added                    time.Time
	Uploading                time.Time
	Uploaded                 time.Time
	// Ended is set for Failed and Skipped; Message says why.
	Ended      time.Time
	Phase      coredogv1.Phase
	Message    string
	StoredSize int64
}

// tracker watches every CoreDump through an informer and records when each
// was first seen in each phase.
type tracker struct {
	mu      sync.Mutex
	byName  map[string]*dumpSeen
	byFile  map[[2]string]*dumpSeen
	added   map[string]int // per policy
	done    map[string]int // per policy: Uploaded
	ended   map[string]int // per policy: Failed or Skipped
	changed chan struct{}
}

func startTracker(ctx context.Context, cfg *rest.Config) (*tracker, error) {
	t := &tracker{
		byName: map[string]*dumpSeen{}, byFile: map[[2]string]*dumpSeen{},
		added: map[string]int{}, done: map[string]int{}, ended: map[string]int{},
		changed: make(chan struct{}),
	}
	c, err := cache.New(cfg, cache.Options{Scheme: scheme.New(), DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		return nil, err
	}
	inf, err := c.GetInformer(ctx, &coredogv1.CoreDump{})
	if err != nil {
		return nil, err
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { t.observe(obj) },
		UpdateFunc: func(_, obj any) { t.observe(obj) },
	}); err != nil {
		return nil, err
	}
	go func() { _ = c.Start(ctx) }()
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if !c.WaitForCacheSync(sctx) {
		return nil, fmt.Errorf("the CoreDump informer did not sync")
	}
	return t, nil
}

func (t *tracker) observe(obj any) {
	now := time.Now()
	cd, ok := obj.(*coredogv1.CoreDump)
	if !ok {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.byName[cd.Name]
	if d == nil {
		d = &dumpSeen{Name: cd.Name, Policy: cd.Spec.PolicyName, Node: cd.Spec.NodeName, File: cd.Spec.FileName, Size: cd.Spec.Size, Added: now}
		t.byName[cd.Name] = d
		t.byFile[[2]string{d.Policy, d.File}] = d
		t.added[d.Policy]++
	}
	switch p := cd.Status.Phase; {
	case p == coredogv1.PhaseUploading && d.Uploading.IsZero():
		d.Uploading = now
	case p == coredogv1.PhaseUploaded && d.Uploaded.IsZero():
		d.Uploaded = now
		if d.Uploading.IsZero() {
			d.Uploading = now
		}
		if cd.Status.Storage != nil {
			d.StoredSize = cd.Status.Storage.StoredSize
		}
		t.done[d.Policy]++
	case (p == coredogv1.PhaseFailed || p == coredogv1.PhaseSkipped) && d.Ended.IsZero():
		d.Ended = now
		d.Message = string(p) + ": " + cd.Status.Reason + ": " + cd.Status.Message
		t.ended[d.Policy]++
	}
	d.Phase = cd.Status.Phase
	close(t.changed)
	t.changed = make(chan struct{})
}

// wait blocks until cond (called with the tracker locked) holds.
func (t *tracker) wait(ctx context.Context, cond func() (bool, error)) error {
	for {
		t.mu.Lock()
		ok, err := cond()
		ch := t.changed
		t.mu.Unlock()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

// waitUploaded waits until the dump of file under policy is Uploaded and
// returns what was seen; a Failed or Skipped dump is an error.
func (t *tracker) waitUploaded(ctx context.Context, policy, file string) (dumpSeen, error) {
	var out dumpSeen
	err := t.wait(ctx, func() (bool, error) {
		d := t.byFile[[2]string{policy, file}]
		if d == nil {
			return false, nil
		}
		if !d.Ended.IsZero() {
			return false, fmt.Errorf("CoreDump %s of %s ended %s", d.Name, file, d.Message)
		}
		out = *d
		return !d.Uploaded.IsZero(), nil
	})
	if err != nil && out.Name != "" {
		err = fmt.Errorf("%w (CoreDump %s last seen in phase %q)", err, out.Name, out.Phase)
	}
	return out, err
}

// waitCounts waits until policy has at least added CoreDumps and uploaded
// Uploaded ones, failing at once on a Failed or Skipped one.
func (t *tracker) waitCounts(ctx context.Context, policy string, added, uploaded int) error {
	err := t.wait(ctx, func() (bool, error) {
		if n := t.ended[policy]; n > 0 {
			for _, d := range t.byName {
				if d.Policy == policy && !d.Ended.IsZero() {
					return false, fmt.Errorf("%d CoreDumps of %s ended without upload, e.g. %s: %s", n, policy, d.Name, d.Message)
				}
			}
		}
		return t.added[policy] >= added && t.done[policy] >= uploaded, nil
	})
	if err != nil {
		t.mu.Lock()
		err = fmt.Errorf("%w (policy %s: %d added, %d uploaded)", err, policy, t.added[policy], t.done[policy])
		t.mu.Unlock()
	}
	return err
}

// find returns what was seen of policy's dump of file.
func (t *tracker) find(policy, file string) (dumpSeen, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.byFile[[2]string{policy, file}]
	if d == nil {
		return dumpSeen{}, false
	}
	return *d, true
}

// all returns copies of policy's dumps.
func (t *tracker) all(policy string) []dumpSeen {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []dumpSeen
	for _, d := range t.byName {
		if d.Policy == policy {
			out = append(out, *d)
		}
	}
	return out
}

// forget drops policy's dumps, after they were purged.
func (t *tracker) forget(policy string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, d := range t.byName {
		if d.Policy == policy {
			delete(t.byName, name)
			delete(t.byFile, [2]string{d.Policy, d.File})
		}
	}
	delete(t.added, policy)
	delete(t.done, policy)
	delete(t.ended, policy)
}

// purge deletes every CoreDump of policy, removing the controller's
// finalizer first (the benchmark cleans storage itself), and forgets them.
func (s *suite) purge(ctx context.Context, policy string) error {
	var list coredogv1.CoreDumpList
	sel := client.MatchingLabels{coredogv1.LabelPolicy: coredogv1.LabelValue(policy)}
	if err := s.k8s.List(ctx, &list, client.InNamespace(ns), sel); err != nil {
		return err
	}
	work := make(chan *coredogv1.CoreDump)
	errs := make(chan error, len(list.Items))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for cd := range work {
				if len(cd.Finalizers) > 0 {
					patch := client.MergeFrom(cd.DeepCopy())
					cd.Finalizers = nil
					if err := client.IgnoreNotFound(s.k8s.Patch(ctx, cd, patch)); err != nil {
						errs <- err
						continue
					}
				}
			}
		})
	}
	for i := range list.Items {
		if len(list.Items[i].Finalizers) > 0 {
			work <- &list.Items[i]
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		return err
	}
	if err := s.k8s.DeleteAllOf(ctx, &coredogv1.CoreDump{}, client.InNamespace(ns), sel); err != nil {
		return err
	}
	if err := waitGone(ctx, s, policy); err != nil {
		return err
	}
	s.tracker.forget(policy)
	return nil
}

func waitGone(ctx context.Context, s *suite, policy string) error {
	for {
		var list coredogv1.CoreDumpList
		if err := s.k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{coredogv1.LabelPolicy: coredogv1.LabelValue(policy)}, client.Limit(1)); err != nil {
			return err
		}
		if len(list.Items) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("CoreDumps of %s still exist: %w", policy, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
