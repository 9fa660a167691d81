package app

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
)

// done reports whether the node's copy of a dump may go.
func done(cd *coredogv1.CoreDump) bool {
	return cd.Status.Phase == coredogv1.PhaseUploaded || cd.Status.Phase == coredogv1.PhaseSkipped
}

// startLifecycle watches this node's CoreDumps and releases local files when
// their dump is Uploaded, Skipped or deleted.
func (a *Agent) startLifecycle(ctx context.Context, restCfg *rest.Config, scheme *runtime.Scheme) (cache.Cache, error) {
	c, err := cache.New(restCfg, cache.Options{
		Scheme:            scheme,
		DefaultNamespaces: map[string]cache.Config{a.cfg.Namespace: {}},
		ByObject: map[client.Object]cache.ByObject{
			&coredogv1.CoreDump{}: {Field: a.nodeSelector(), Transform: trimCoreDump},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating CoreDump cache: %w", err)
	}
	inf, err := c.GetInformer(ctx, &coredogv1.CoreDump{})
	if err != nil {
		return nil, fmt.Errorf("watching CoreDumps: %w", err)
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { a.onCoreDump(obj, false) },
		UpdateFunc: func(_, obj any) { a.onCoreDump(obj, false) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			a.onCoreDump(obj, true)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("watching CoreDumps: %w", err)
	}
	return c, nil
}

// cachedDump is all the agent's cache keeps of a CoreDump: the cache holds
// every CoreDump of the node for as long as it exists (thousands, when no
// manager drains them), and the agent acts only on its name, phase and
// deletion. Name, Namespace and ResourceVersion stay so that the informer's
// keys and its resync detection work as for the full object.
type cachedDump struct {
	metav1.ObjectMeta
	phase coredogv1.Phase
}

// trimCoreDump is the cache's transform. It may be handed what it returned
// before (a watch-list's objects are transformed twice), so it lets a
// cachedDump through.
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

func (a *Agent) onCoreDump(obj any, deleted bool) {
	// The cache's field selector already limits it to this node and policy.
	cd, ok := obj.(*cachedDump)
	if !ok {
		return
	}
	switch {
	case deleted || !cd.DeletionTimestamp.IsZero():
		a.release(cd.Name, "its CoreDump was deleted")
	case cd.phase == coredogv1.PhaseUploaded || cd.phase == coredogv1.PhaseSkipped:
		a.release(cd.Name, "its CoreDump is "+string(cd.phase))
	}
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
	a.metrics.localBytes.Set(float64(a.guard.LocalBytes()))
	a.log.Info("Deleted local core file", "name", name, "why", why)
}

// retryQueue re-creates CoreDumps the API server did not take, with capped
// exponential backoff shared by the whole queue (an unreachable API server
// fails them all alike). Files stay on the node meanwhile. Once a create
// succeeds the rest follow without waiting, and kick cuts a backoff short,
// so that a queue that built up during an outage drains as soon as it ends.
type retryQueue struct {
	create func(context.Context, *coredogv1.CoreDump) error
	log    logr.Logger
	mu     sync.Mutex
	items  map[string]*coredogv1.CoreDump
	order  []string
	wake   chan struct{}
	// retryNow is kick's signal.
	retryNow chan struct{}
	// minDelay and maxDelay bound the backoff (retryMin, retryMax).
	minDelay, maxDelay time.Duration
}

const (
	retryMin = 500 * time.Millisecond
	retryMax = 30 * time.Second
)

func newRetryQueue(create func(context.Context, *coredogv1.CoreDump) error, log logr.Logger) *retryQueue {
	return &retryQueue{create: create, log: log, items: map[string]*coredogv1.CoreDump{}, wake: make(chan struct{}, 1),
		retryNow: make(chan struct{}, 1), minDelay: retryMin, maxDelay: retryMax}
}

// kick makes the next attempt due now: the API server answers again.
func (q *retryQueue) kick() {
	select {
	case q.retryNow <- struct{}{}:
	default:
	}
}

func (q *retryQueue) add(cd *coredogv1.CoreDump) {
	q.mu.Lock()
	if _, ok := q.items[cd.Name]; !ok {
		q.order = append(q.order, cd.Name)
	}
	q.items[cd.Name] = cd
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *retryQueue) remove(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.items, name)
}

// next returns the oldest waiting CoreDump.
func (q *retryQueue) next() *coredogv1.CoreDump {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.order) > 0 {
		if cd, ok := q.items[q.order[0]]; ok {
			return cd
		}
		q.order = q.order[1:]
	}
	return nil
}

func (q *retryQueue) run(ctx context.Context) error {
	delay := q.minDelay
	for {
		cd := q.next()
		if cd == nil {
			delay = q.minDelay
			select {
			case <-ctx.Done():
				return nil
			case <-q.wake:
			case <-q.retryNow:
			}
			continue
		}
		if delay > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			case <-q.retryNow:
			}
		}
		if err := q.create(ctx, cd); err != nil {
			delay = min(max(delay*2, q.minDelay), q.maxDelay)
			q.log.V(1).Info("Creating CoreDump failed again", "name", cd.Name, "retryIn", delay.String(), "err", err.Error())
			continue
		}
		// The API server takes creates again: the rest need not wait.
		delay = 0
		q.remove(cd.Name)
	}
}

// heartbeat keeps the agent's Lease fresh with its endpoint and state.
func (a *Agent) heartbeat(ctx context.Context) error {
	t := time.NewTicker(a.cfg.LeaseRenew)
	defer t.Stop()
	failing := false
	for {
		if err := a.renewLease(ctx); err != nil {
			failing = true
			a.log.Info("Renewing the agent's Lease failed", "err", err.Error())
		} else if failing {
			failing = false
			// The API server is back: CoreDumps held back meanwhile need
			// not wait out their backoff.
			a.pending.kick()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (a *Agent) renewLease(ctx context.Context) error {
	name := agentlease.Name(a.cfg.Policy, a.cfg.NodeName)
	now := metav1.NewMicroTime(time.Now())
	annotations := map[string]string{
		agentlease.AnnotationEndpoint:    a.endpoint,
		agentlease.AnnotationMode:        a.detector.Mode(),
		agentlease.AnnotationCorePattern: a.cfg.CorePattern,
		agentlease.AnnotationLocalBytes:  strconv.FormatInt(a.guard.LocalBytes(), 10),
	}
	var lease coordinationv1.Lease
	err := a.client.Get(ctx, client.ObjectKey{Namespace: a.cfg.Namespace, Name: name}, &lease)
	if apierrors.IsNotFound(err) {
		lease = coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: a.cfg.Namespace, Annotations: annotations, Labels: map[string]string{
				coredogv1.LabelNode:   coredogv1.LabelValue(a.cfg.NodeName),
				coredogv1.LabelPolicy: coredogv1.LabelValue(a.cfg.Policy),
			}},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr.To(a.cfg.NodeName),
				LeaseDurationSeconds: ptr.To(int32(3 * a.cfg.LeaseRenew / time.Second)),
				AcquireTime:          &now,
				RenewTime:            &now,
			},
		}
		return a.client.Create(ctx, &lease)
	}
	if err != nil {
		return err
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	for k, v := range annotations {
		lease.Annotations[k] = v
	}
	lease.Spec.HolderIdentity = ptr.To(a.cfg.NodeName)
	lease.Spec.LeaseDurationSeconds = ptr.To(int32(3 * a.cfg.LeaseRenew / time.Second))
	lease.Spec.RenewTime = &now
	return a.client.Update(ctx, &lease)
}
