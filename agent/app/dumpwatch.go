package app

import (
	"context"
	"sync"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// dumpWatch follows this node's CoreDumps and reports each one that is done
// with: Uploaded, Skipped, being deleted, or gone. It is client-go's
// reflector feeding a store of names, not an informer: the agent never reads
// a CoreDump back from a cache, and a node whose dumps wait for upload may
// have thousands of them, each of which an informer would keep as an
// object, a key, an index entry and a queued notification. What the store
// must remember is which dumps exist, so that a relist after a broken watch
// can tell which ones were deleted meanwhile.
type dumpWatch struct {
	lw    *toolscache.ListWatch
	store *dumpStore
	// restart asks run to start over with a new reflector (see kick).
	restart chan struct{}
}

func newDumpWatch(c *kubeClient, namespace string, selector fields.Selector, onDone func(name, why string)) *dumpWatch {
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
			opts.FieldSelector = selector.String()
			return c.listDumps(ctx, namespace, opts)
		},
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			opts.FieldSelector = selector.String()
			return c.watchDumps(ctx, namespace, opts)
		},
	}
	store := &dumpStore{onDone: onDone, synced: make(chan struct{})}
	return &dumpWatch{lw: lw, store: store, restart: make(chan struct{}, 1)}
}

// run lists and watches until ctx is done.
func (w *dumpWatch) run(ctx context.Context) error {
	for {
		rctx, cancel := context.WithCancel(ctx)
		r := toolscache.NewReflectorWithOptions(w.lw, &coredogv1.CoreDump{}, w.store, toolscache.ReflectorOptions{
			Name:            "coredumps",
			TypeDescription: "CoreDump",
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.RunWithContext(rctx)
		}()
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return nil
		case <-w.restart:
			cancel()
			<-done
		}
	}
}

// kick makes the watch start over at once with a fresh list, for a caller
// that knows the API server answers again. After an outage the reflector
// retries with a backoff that reaches 30 s, doubled by jitter; meanwhile
// dumps Uploaded during or right after the outage would keep their files on
// the node. The new reflector's list hands them to the store (Replace).
func (w *dumpWatch) kick() {
	select {
	case w.restart <- struct{}{}:
	default:
	}
}

// has reports whether the CoreDump name is known to exist.
func (w *dumpWatch) has(name string) bool {
	w.store.mu.Lock()
	defer w.store.mu.Unlock()
	return w.store.names.has(name)
}

// synced is closed once the first list has been seen whole.
func (w *dumpWatch) synced() <-chan struct{} { return w.store.synced }

// dumpStore is the reflector's store: the names of the CoreDumps that exist,
// and a callback for those that are done with.
type dumpStore struct {
	onDone func(name, why string)

	mu    sync.Mutex
	names nameSet

	syncOnce sync.Once
	synced   chan struct{}
}

var _ toolscache.TransformingStore = (*dumpStore)(nil)

// dumpFacts is what the agent acts on. A watch delivers whole CoreDumps; a
// watch-list's items have been through Transformer already.
func dumpFacts(obj any) (name, doneWhy string, ok bool) {
	var phase coredogv1.Phase
	var deleting bool
	switch cd := obj.(type) {
	case *coredogv1.CoreDump:
		name, phase, deleting = cd.Name, cd.Status.Phase, !cd.DeletionTimestamp.IsZero()
	case *cachedDump:
		name, phase, deleting = cd.Name, cd.phase, !cd.DeletionTimestamp.IsZero()
	default:
		return "", "", false
	}
	switch {
	case deleting:
		doneWhy = "its CoreDump was deleted"
	case phase.NodeMayRelease():
		doneWhy = "its CoreDump is " + string(phase)
	}
	return name, doneWhy, true
}

func (s *dumpStore) Add(obj any) error { return s.Update(obj) }

// Resync has nothing to do: the store holds no objects to hand out again.
func (s *dumpStore) Resync() error { return nil }

// Transformer keeps the watch-list's first snapshot small: the reflector
// holds all of it until it hands it to Replace.
func (s *dumpStore) Transformer() toolscache.TransformFunc { return trimCoreDump }

func (s *dumpStore) Update(obj any) error {
	name, why, ok := dumpFacts(obj)
	if !ok {
		return nil
	}
	s.mu.Lock()
	s.names.add(name)
	s.mu.Unlock()
	if why != "" {
		s.onDone(name, why)
	}
	return nil
}

func (s *dumpStore) Delete(obj any) error {
	name, _, ok := dumpFacts(obj)
	if !ok {
		return nil
	}
	s.mu.Lock()
	s.names.remove(name)
	s.mu.Unlock()
	s.onDone(name, "its CoreDump was deleted")
	return nil
}

// Replace takes a whole list: what it lacks of the names known before was
// deleted while nobody watched.
func (s *dumpStore) Replace(list []any, _ string) error {
	names := newNameSet(len(list))
	var done [][2]string
	for _, obj := range list {
		name, why, ok := dumpFacts(obj)
		if !ok {
			continue
		}
		names.add(name)
		if why != "" {
			done = append(done, [2]string{name, why})
		}
	}
	s.mu.Lock()
	s.names.each(func(name string) {
		if !names.has(name) {
			done = append(done, [2]string{name, "its CoreDump was deleted"})
		}
	})
	s.names = names
	s.mu.Unlock()
	for _, d := range done {
		s.onDone(d[0], d[1])
	}
	s.syncOnce.Do(func() { close(s.synced) })
	return nil
}

// cachedDump is what a watch-list's first snapshot keeps of each CoreDump
// until dumpStore.Replace has read it: the agent acts only on its name,
// phase and deletion. Namespace and ResourceVersion stay because the
// reflector keys and orders the snapshot by them.
type cachedDump struct {
	metav1.ObjectMeta
	phase coredogv1.Phase
}

// trimCoreDump is the watch-list's transform. It may be handed what it
// returned before, so it lets a cachedDump through.
func trimCoreDump(obj any) (any, error) {
	cd, ok := obj.(*coredogv1.CoreDump)
	if !ok {
		return obj, nil
	}
	return &cachedDump{
		ObjectMeta: metav1.ObjectMeta{
			Name: cd.Name, Namespace: cd.Namespace, ResourceVersion: cd.ResourceVersion,
			DeletionTimestamp: cd.DeletionTimestamp,
		},
		phase: cd.Status.Phase,
	}, nil
}
