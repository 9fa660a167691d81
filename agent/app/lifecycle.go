package app

import (
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
)

// done reports whether the node's copy of a dump may go.
func done(cd *coredogv1.CoreDump) bool {
	return cd.Status.Phase.NodeMayRelease()
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
			// not wait out their backoff, nor the CoreDump watch its own.
			a.pending.kick()
			if a.dumps != nil {
				a.dumps.kick()
			}
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
	lease, err := a.client.getLease(ctx, a.cfg.Namespace, name)
	if apierrors.IsNotFound(err) {
		return a.client.createLease(ctx, &coordinationv1.Lease{
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
		})
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
	return a.client.updateLease(ctx, lease)
}
