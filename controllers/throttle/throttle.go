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
}

// Allowed reports whether d may be stored, given the other dumps (which may
// include d itself). Dumps are ordered by creation time, then name; d is
// allowed when fewer than count dumps with its key, ordered before it and
// created less than window before it, were not excluded. Dumps not decided
// yet count as stored, which can only make the answer stricter.
func Allowed(d Dump, others []Dump, count int, window time.Duration) bool {
	if count <= 0 {
		return false
	}
	spent := 0
	for _, o := range others {
		if o.Name != d.Name && o.Key == d.Key && !o.Excluded && before(o, d) && d.Created.Sub(o.Created) < window {
			spent++
		}
	}
	return spent < count
}

func before(a, b Dump) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}
