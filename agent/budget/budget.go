// Package budget decides, for each crash an agent finds, whether it gets a
// CoreDump of its own or is counted on one that exists: a pod that forks and
// crashes children in a loop must not turn into one API object per crash.
// Two token buckets bound creation: one for the node and one per budget key
// (policy, container or hostname, and crash signature; see
// coredogv1.BudgetKey). A crash past either is counted on the latest
// CoreDump of its key, or, when its key has none, on the node's latest
// CoreDump as a crash of another signature. Every crash is either a CoreDump
// or counted: none is dropped.
//
// It is pure and in memory: the caller passes the time, and reads and
// writes no objects and no files. It only ever names CoreDumps the caller
// told it it created, so an agent counts only on its own objects.
package budget

import (
	"time"
)

// Limits are the two buckets' sizes and refill intervals.
type Limits struct {
	// NodeBurst CoreDumps at once for the node, then one per NodeInterval.
	NodeBurst    int
	NodeInterval time.Duration
	// KeyBurst CoreDumps at once per key, then one per KeyInterval.
	KeyBurst    int
	KeyInterval time.Duration
}

// maxKeys bounds the keys remembered. Crash signatures come from what a pod
// controls (executable names, crash sites), so their number is the
// attacker's to choose; a key forgotten only loses its bucket's debt and
// its target, and its next crash is decided as a new key's.
const maxKeys = 4096

// bucket is a token bucket; tokens are counted as of last.
type bucket struct {
	tokens float64
	last   time.Time
}

func (b *bucket) refill(now time.Time, burst int, interval time.Duration) {
	if b.last.IsZero() {
		b.tokens, b.last = float64(burst), now
		return
	}
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(float64(burst), b.tokens+float64(d)/float64(interval))
		b.last = now
	}
}

type key struct {
	bucket bucket
	// target is the latest CoreDump created for the key; "" when none is known.
	target string
}

// Budget is one agent's creation budget. It is not safe for concurrent use.
type Budget struct {
	limits Limits
	node   bucket
	keys   map[string]*key
	// latest is the latest CoreDump created for any key.
	latest string
}

// New returns a budget with full buckets.
func New(l Limits) *Budget {
	l.NodeBurst, l.KeyBurst = max(l.NodeBurst, 1), max(l.KeyBurst, 1)
	if l.NodeInterval <= 0 {
		l.NodeInterval = time.Second
	}
	if l.KeyInterval <= 0 {
		l.KeyInterval = time.Second
	}
	return &Budget{limits: l, keys: map[string]*key{}}
}

// Decision says what to do with one crash.
type Decision struct {
	// Create: the crash gets its own CoreDump, under the name given to Decide.
	Create bool
	// Target is the CoreDump the crash is counted on when it gets none.
	Target string
	// Other: the crash is counted on Target as one of another key.
	Other bool
}

// Decide decides for one crash of key found at now; name is the CoreDump it
// would get. A created CoreDump becomes the target of its key and the node's
// latest.
func (b *Budget) Decide(k, name string, now time.Time) Decision {
	st := b.refill(k, now)
	nodeOK, keyOK := b.node.tokens >= 1, st.bucket.tokens >= 1
	switch {
	case nodeOK && (keyOK || st.target == ""):
		// A key whose CoreDumps are all gone gets a new one even with
		// its bucket spent: there is nothing else to count it on, and
		// the node's bucket still bounds it.
	case st.target != "":
		return Decision{Target: st.target}
	case b.latest != "":
		return Decision{Target: b.latest, Other: true}
	default:
		// The node has no CoreDump at all to count on: this one is the
		// only one, so creating it cannot flood anything.
	}
	b.spend(st, name)
	return Decision{Create: true}
}

// Record counts a CoreDump of key k that exists already, made at at (by
// this agent before it restarted), as if it had been decided then: a
// restarted agent neither starts with full buckets nor forgets what to
// count on. Call it in creation order.
func (b *Budget) Record(k, name string, at time.Time) {
	b.spend(b.refill(k, at), name)
}

// refill brings the node's bucket and key k's (made if new) up to now.
func (b *Budget) refill(k string, now time.Time) *key {
	l := b.limits
	st := b.keys[k]
	if st == nil {
		b.prune(now)
		st = &key{}
		b.keys[k] = st
	}
	b.node.refill(now, l.NodeBurst, l.NodeInterval)
	st.bucket.refill(now, l.KeyBurst, l.KeyInterval)
	return st
}

// spend takes a token from the node and from st for the CoreDump name,
// which becomes the target of its key and the node's latest.
func (b *Budget) spend(st *key, name string) {
	b.node.tokens = max(b.node.tokens-1, 0)
	st.bucket.tokens = max(st.bucket.tokens-1, 0)
	st.target, b.latest = name, name
}

// Gone forgets a CoreDump that no longer exists (deleted, or being deleted),
// so that nothing more is counted on it.
func (b *Budget) Gone(name string) {
	if b.latest == name {
		b.latest = ""
	}
	for _, st := range b.keys {
		if st.target == name {
			st.target = ""
		}
	}
}

// Latest is the node's latest CoreDump, for counts that lost their target;
// "" when none is known.
func (b *Budget) Latest() string { return b.latest }

// prune makes room for a new key: first keys whose buckets are full again
// (nothing is owed), then any, so that the map never grows past maxKeys.
func (b *Budget) prune(now time.Time) {
	if len(b.keys) < maxKeys {
		return
	}
	l := b.limits
	for k, st := range b.keys {
		st.bucket.refill(now, l.KeyBurst, l.KeyInterval)
		if st.bucket.tokens >= float64(l.KeyBurst) {
			delete(b.keys, k)
		}
	}
	for k := range b.keys {
		if len(b.keys) < maxKeys {
			break
		}
		delete(b.keys, k)
	}
}
