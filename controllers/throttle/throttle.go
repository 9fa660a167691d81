// Package throttle owns a policy's rate-limit budget: which dumps share one
// (Key), how they are ordered (creation time, then name), the limit and
// window a policy sets (Limit), whether a dump may be stored (Allowed) and
// which window a throttled dump is counted in (WindowOf), for the
// once-per-window notification. Its answers are computed from the
// CoreDumps themselves, so they survive controller restarts and leader
// changes, and never change for a dump as later dumps arrive; the one state
// it keeps (Ledger) covers the moment between a decision and the cache
// showing it. It reads no objects and writes none.
package throttle

import (
	"sort"
	"sync"
	"time"

	"k8s.io/utils/ptr"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Dump is what the decisions need to know about one CoreDump.
type Dump struct {
	Name    string
	Created time.Time
	// Key groups dumps that share a budget: policy, workload and signature.
	Key string
	// Excluded is true for dumps already refused by the rate limit, and
	// for dumps that will never be stored for another reason (they spend
	// no budget).
	Excluded bool
	// Spent is true for dumps already let through (uploading, uploaded or
	// failed): they used the budget whatever their order.
	Spent bool
	// Throttled: Skipped with reason Throttled.
	Throttled bool
	// Decided is false while the dump may still be throttled (Pending).
	Decided bool
}

// Of describes a CoreDump for the decisions.
func Of(cd *coredogv1.CoreDump) Dump {
	p := cd.Status.Phase
	return Dump{
		Name: cd.Name, Created: cd.CreationTimestamp.Time, Key: Key(cd),
		Excluded:  p == coredogv1.PhaseSkipped,
		Spent:     p == coredogv1.PhaseUploading || p == coredogv1.PhaseUploaded || p == coredogv1.PhaseFailed,
		Throttled: p == coredogv1.PhaseSkipped && cd.Status.Reason == coredogv1.ReasonThrottled,
		Decided:   p != "" && p != coredogv1.PhasePending,
	}
}

// Key is the rate-limit budget a dump draws on: its policy, workload and signature.
func Key(cd *coredogv1.CoreDump) string {
	return coredogv1.BudgetKey(cd.Spec.PolicyName, Workload(cd), cd.Spec.Signature)
}

// Workload names the workload a dump's budget belongs to, for keys and for people.
func Workload(cd *coredogv1.CoreDump) string {
	ref := cd.Status.Pod
	switch {
	case ref == nil || ref.Name == "":
		return "unresolved on " + cd.Spec.NodeName
	case ref.WorkloadKind == "" || ref.WorkloadKind == "Pod":
		return ref.Namespace + "/Pod/" + ref.Name
	default:
		return ref.Namespace + "/" + ref.WorkloadKind + "/" + ref.WorkloadName
	}
}

// Limit is the policy's rate limit, with the API's defaults for a policy
// that predates them: at most count uploads per budget in any window.
func Limit(p *coredogv1.CoreDumpPolicy) (count int32, window time.Duration) {
	rl := p.Spec.Limits.RateLimit
	count = ptr.Deref(rl.Count, coredogv1.DefaultRateLimitCount)
	window = coredogv1.DefaultRateLimitWindow
	if rl.Window != nil && rl.Window.Duration > 0 {
		window = rl.Window.Duration
	}
	return count, window
}

// Allowed reports whether d may be stored, given the other dumps (which may
// include d itself). Dumps with d's key created less than window from it
// count against it when they were already let through (Spent), or when they
// are undecided and ordered before it (Before): undecided ones count as
// stored, which can only make the answer stricter. Creation times have
// one-second resolution, so two dumps of one second are ordered by name;
// counting every spent dump keeps a later one from slipping past an earlier
// one that was stored already.
func Allowed(d Dump, others []Dump, count int, window time.Duration) bool {
	if count <= 0 {
		return false
	}
	spent := 0
	for _, o := range others {
		if o.Name == d.Name || o.Key != d.Key || o.Excluded || d.Created.Sub(o.Created).Abs() >= window {
			continue
		}
		if o.Spent || Before(o, d) {
			spent++
		}
	}
	return spent < count
}

// Window is one rate-limit window of throttled dumps: the dump that opened
// it (and carries its notification) and how many throttled dumps fall in it.
type Window struct {
	Leader Dump
	Count  int
	// Until is when the window closes: Leader.Created + the rate-limit window.
	Until time.Time
}

// WindowOf finds the window throttled dump d belongs to among the dumps of
// its budget (which may include d). In budget order, the first throttled
// dump opens a window of length window; a throttled dump created within it
// belongs to it, the next one after it opens a new one. ready is false while
// a dump ordered before d is undecided, since it may yet be throttled and
// change the answer. Like Allowed, the result depends only on the
// CoreDumps, so every reconcile, on any leader, agrees.
func WindowOf(d Dump, budget []Dump, window time.Duration) (w Window, ready bool) {
	all := make([]Dump, 0, len(budget)+1)
	seen := false
	for _, p := range budget {
		if p.Name == d.Name {
			seen = true
			p = d
		}
		all = append(all, p)
	}
	if !seen {
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return Before(all[i], all[j]) })
	var leader *Dump
	found := false
	for i := range all {
		p := all[i]
		if !found && Before(p, d) && !p.Decided {
			return Window{}, false
		}
		if !p.Throttled {
			continue
		}
		if leader == nil || p.Created.Sub(leader.Created) >= window {
			if found {
				break // the next window
			}
			leader = &all[i]
			w = Window{Leader: p, Until: p.Created.Add(window)}
		}
		w.Count++
		if p.Name == d.Name {
			found = true
		}
	}
	return w, found
}

// Undecided reports whether a dump created before until may still be
// throttled, so that a window's count is not final yet.
func Undecided(budget []Dump, until time.Time) bool {
	for _, p := range budget {
		if !p.Decided && p.Created.Before(until) {
			return true
		}
	}
	return false
}

// Before is the budget's order: creation time, then name.
func Before(a, b Dump) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}

// ledgerTTL is how long a Ledger remembers a dump it was told of: far longer
// than an informer takes to show a status the manager wrote.
const ledgerTTL = 10 * time.Minute

// Ledger remembers the dumps this manager let through until its cache shows
// them decided. Decisions read CoreDumps from the informer's cache, which
// may not yet show a status written a moment ago: without the ledger, a dump
// let through but still cached as Pending, and ordered after the one being
// decided, would count for nothing, and one dump too many would be stored.
// The zero Ledger is ready to use; it is safe for concurrent use.
type Ledger struct {
	mu    sync.Mutex
	spent map[string]time.Time
}

// Spend records that the dump name was let through at now.
func (l *Ledger) Spend(name string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.spent == nil {
		l.spent = map[string]time.Time{}
	}
	for n, at := range l.spent {
		if now.Sub(at) > ledgerTTL {
			delete(l.spent, n)
		}
	}
	l.spent[name] = now
}

// Apply marks as Spent the dumps of others that the ledger let through but
// the cache still shows undecided, and forgets those it shows decided.
func (l *Ledger) Apply(others []Dump) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := range others {
		o := &others[i]
		if _, ok := l.spent[o.Name]; !ok {
			continue
		}
		if o.Decided {
			delete(l.spent, o.Name)
			continue
		}
		o.Spent = true
	}
}

// Len is how many dumps the ledger remembers.
func (l *Ledger) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.spent)
}
