package app

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

const (
	// seriesFlushInterval is how often counted crashes are written: at most
	// one read and one patch per CoreDump per interval, however fast
	// crashes come.
	seriesFlushInterval = time.Second
	// seriesFinalFlush bounds the last write when the agent stops.
	seriesFinalFlush = 5 * time.Second
)

// seedListPage is how many CoreDumps one list request of seedBudget returns.
const seedListPage = 500

// seedBudget hands the creation budget the CoreDumps of this node and
// policy that exist already, oldest first, so that a restarted agent spends
// the budget it had and counts on its own CoreDumps. Without it each
// restart would give a crash loop fresh buckets. A failed list leaves the
// buckets full: the agent still runs.
func (a *Agent) seedBudget(ctx context.Context) {
	type made struct {
		key, name string
		at        time.Time
	}
	var all []made
	opts := metav1.ListOptions{FieldSelector: a.nodeSelector().String(), Limit: seedListPage}
	for {
		list, err := a.client.listDumps(ctx, a.cfg.Namespace, opts)
		if err != nil {
			a.log.Info("Cannot list this node's CoreDumps; the creation budget starts full", "err", err.Error())
			return
		}
		for i := range list.Items {
			cd := &list.Items[i]
			if !cd.DeletionTimestamp.IsZero() {
				continue
			}
			key := coredogv1.BudgetKey(cd.Spec.PolicyName, cd.Spec.NodeWorkload(), cd.Spec.Signature)
			all = append(all, made{key: key, name: cd.Name, at: cd.CreationTimestamp.Time})
		}
		if opts.Continue = list.Continue; opts.Continue == "" {
			break
		}
	}
	slices.SortFunc(all, func(x, y made) int {
		return cmp.Or(x.at.Compare(y.at), strings.Compare(x.name, y.name))
	})
	a.budgetMu.Lock()
	defer a.budgetMu.Unlock()
	for _, m := range all {
		a.budget.Record(m.key, m.name, m.at)
	}
}

// errGone: the CoreDump no longer exists, is being deleted, or is not this
// agent's; nothing is counted on it.
var errGone = errors.New("the CoreDump is gone or not this agent's")

// tally is crashes counted on one CoreDump and not yet written.
type tally struct {
	count, other int64
	first, last  time.Time
}

func (t *tally) add(o tally) {
	if o.count == 0 && o.other == 0 {
		return
	}
	if t.first.IsZero() || (!o.first.IsZero() && o.first.Before(t.first)) {
		t.first = o.first
	}
	if o.last.After(t.last) {
		t.last = o.last
	}
	t.count += o.count
	t.other += o.other
}

// seriesWriter writes the crashes the creation budget counted into the
// series of their CoreDumps. Counts whose CoreDump went away before they
// were written are counted on the node's latest CoreDump as crashes of
// another signature, so that none is lost while the agent runs. It writes
// only CoreDumps of its own node and policy, which only its budget names.
type seriesWriter struct {
	client           *kubeClient
	ns, node, policy string
	log              logr.Logger
	// gone tells the budget that a CoreDump is gone; latest asks it for
	// the node's latest CoreDump.
	gone   func(name string)
	latest func() string
	// creating reports whether a CoreDump is still being created (or
	// waits to be, in the retry queue): its counts wait for it.
	creating func(name string) bool

	mu       sync.Mutex
	pending  map[string]*tally
	homeless tally
}

func (w *seriesWriter) add(target string, other bool, at time.Time) {
	t := tally{first: at, last: at, count: 1}
	if other {
		t.count, t.other = 0, 1
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.addLocked(target, t)
}

func (w *seriesWriter) addLocked(target string, t tally) {
	p := w.pending[target]
	if p == nil {
		p = &tally{}
		w.pending[target] = p
	}
	p.add(t)
}

// run writes every seriesFlushInterval until ctx is done, then once more.
func (w *seriesWriter) run(ctx context.Context) error {
	tick := time.NewTicker(seriesFlushInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), seriesFinalFlush)
			defer cancel()
			w.flush(fctx)
			if n := w.unwritten(); n > 0 {
				w.log.Info("Stopping with counted crashes not written to their CoreDumps", "crashes", n)
			}
			return nil
		case <-tick.C:
			w.flush(ctx)
		}
	}
}

// unwritten is how many counted crashes wait to be written.
func (w *seriesWriter) unwritten() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := w.homeless.count + w.homeless.other
	for _, t := range w.pending {
		n += t.count + t.other
	}
	return n
}

// flush writes what is pending, once per CoreDump.
func (w *seriesWriter) flush(ctx context.Context) {
	w.mu.Lock()
	batch := w.pending
	w.pending = map[string]*tally{}
	w.mu.Unlock()
	var gone []string
	failed := map[string]tally{}
	for name, t := range batch {
		err := w.write(ctx, name, *t)
		switch {
		case err == nil:
		case errors.Is(err, errGone):
			gone = append(gone, name)
		default:
			w.log.V(1).Info("Writing counted crashes failed; retrying", "name", name, "err", err.Error())
			failed[name] = *t
		}
	}
	for _, name := range gone {
		w.gone(name)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, t := range failed {
		w.addLocked(name, t)
	}
	for _, name := range gone {
		t := batch[name]
		w.homeless.add(tally{other: t.count + t.other, first: t.first, last: t.last})
	}
	if w.homeless.other > 0 {
		if target := w.latest(); target != "" {
			w.addLocked(target, w.homeless)
			w.homeless = tally{}
		}
	}
}

// write adds t to the series of the CoreDump name, conditional on the
// version read, so that a CoreDump whose deletion began meanwhile is not
// written (its counts would go with it).
func (w *seriesWriter) write(ctx context.Context, name string, t tally) error {
	cd, err := w.client.getDump(ctx, w.ns, name)
	if apierrors.IsNotFound(err) {
		if w.creating(name) {
			return fmt.Errorf("CoreDump %s is not created yet", name)
		}
		return errGone
	}
	if err != nil {
		return err
	}
	if !cd.DeletionTimestamp.IsZero() || cd.Spec.NodeName != w.node || cd.Spec.PolicyName != w.policy {
		return errGone
	}
	s := cd.Series
	if s == nil {
		s = &coredogv1.CoreDumpSeries{FirstObserved: metav1.NewTime(t.first)}
	}
	s.Count += t.count
	s.OtherCount += t.other
	if t.last.After(s.LastObserved.Time) {
		s.LastObserved = metav1.NewTime(t.last)
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": cd.ResourceVersion},
		"series":   s,
	})
	if err != nil {
		return err
	}
	err = w.client.patchDump(ctx, w.ns, name, patch)
	if apierrors.IsNotFound(err) {
		return errGone
	}
	if err != nil {
		return fmt.Errorf("patching the series of CoreDump %s: %w", name, err)
	}
	return nil
}
