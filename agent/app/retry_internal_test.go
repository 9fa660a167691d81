package app

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// fakeCreates stands in for the API server: it fails every create while
// down, and records the ones it took.
type fakeCreates struct {
	mu       sync.Mutex
	down     bool
	attempts int
	created  []string
}

func (f *fakeCreates) create(_ context.Context, cd *coredogv1.CoreDump) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.down {
		return errors.New("connection refused")
	}
	f.created = append(f.created, cd.Name)
	return nil
}

func (f *fakeCreates) state() (int, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts, append([]string(nil), f.created...)
}

func (f *fakeCreates) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func dumpNamed(name string) *coredogv1.CoreDump {
	return &coredogv1.CoreDump{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

// A queue that built up while the API server was away must not wait out a
// long backoff once it is back (kick), nor space the held-back creates out
// by the backoff once one has gone through. The backoff here is an hour, so
// that only those two paths can make progress while the test waits.
func TestRetryQueueDrainsAtOnceWhenKicked(t *testing.T) {
	g := NewWithT(t)
	api := &fakeCreates{down: true}
	q := newRetryQueue(api.create, logr.Discard())
	q.minDelay, q.maxDelay = time.Hour, time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { defer close(done); _ = q.run(ctx) }()
	defer func() { cancel(); <-done }()

	names := []string{"core-a", "core-b", "core-c", "core-d"}
	for _, n := range names {
		q.add(dumpNamed(n))
	}
	// Down: a kick makes one attempt, which fails; the rest wait.
	q.kick()
	g.Eventually(func() int { a, _ := api.state(); return a }).WithTimeout(10 * time.Second).Should(Equal(1))
	g.Consistently(func() int { a, _ := api.state(); return a }).WithTimeout(300 * time.Millisecond).Should(Equal(1))

	// Back: one kick, and every held-back CoreDump is created, in order.
	api.setDown(false)
	q.kick()
	g.Eventually(func() []string { _, c := api.state(); return c }).WithTimeout(10 * time.Second).Should(Equal(names))
	g.Expect(q.next()).To(BeNil())
	a, _ := api.state()
	g.Expect(a).To(Equal(1 + len(names)))
}
