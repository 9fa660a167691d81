package app

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

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

func (q *retryQueue) remove(name string) (wasQueued bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, wasQueued = q.items[name]
	delete(q.items, name)
	return wasQueued
}

// has reports whether the CoreDump name waits to be created.
func (q *retryQueue) has(name string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.items[name]
	return ok
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
