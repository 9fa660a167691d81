// Package throttle decides whether a dump may be stored under a policy's
// rate limit: at most Count uploads per workload and crash signature in any
// Window. It is pure and stateless: the verdict is computed from the
// CoreDumps themselves, so it survives controller restarts and leader
// changes, and it never changes for a dump as later dumps arrive.
package throttle

import "time"

// Dump is what the decision needs to know about one CoreDump.
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
}

// Allowed reports whether d may be stored, given the other dumps (which may
// include d itself). Dumps with d's key created less than window from it
// count against it when they were already let through (Spent), or when they
// are undecided and ordered before it (creation time, then name): undecided
// ones count as stored, which can only make the answer stricter. Creation
// times have one-second resolution, so two dumps of one second are ordered
// by name; counting every spent dump keeps a later one from slipping past an
// earlier one that was stored already.
func Allowed(d Dump, others []Dump, count int, window time.Duration) bool {
	if count <= 0 {
		return false
	}
	spent := 0
	for _, o := range others {
		if o.Name == d.Name || o.Key != d.Key || o.Excluded || abs(d.Created.Sub(o.Created)) >= window {
			continue
		}
		if o.Spent || before(o, d) {
			spent++
		}
	}
	return spent < count
}

func abs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func before(a, b Dump) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}
