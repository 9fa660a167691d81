package throttle

import (
	"fmt"
	"testing"
	"time"
)

func TestAllowed(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(name string, sec int, key string, excluded bool) Dump {
		return Dump{Name: name, Created: t0.Add(time.Duration(sec) * time.Second), Key: key, Excluded: excluded}
	}
	burst := func(n int) []Dump {
		var out []Dump
		for i := range n {
			out = append(out, at(fmt.Sprintf("d%02d", i), i, "k", false))
		}
		return out
	}
	cases := []struct {
		name   string
		d      Dump
		others []Dump
		count  int
		window time.Duration
		want   bool
	}{
		{"first", at("a", 0, "k", false), nil, 5, time.Hour, true},
		{"fifth of a burst", burst(10)[4], burst(10), 5, time.Hour, true},
		{"sixth of a burst", burst(10)[5], burst(10), 5, time.Hour, false},
		{"later ones do not change an earlier verdict", burst(3)[1], burst(100), 2, time.Hour, true},
		{"other keys do not count", at("x", 10, "other", false), burst(10), 5, time.Hour, true},
		{"excluded dumps spend no budget", at("x", 10, "k", false),
			[]Dump{at("a", 1, "k", true), at("b", 2, "k", true), at("c", 3, "k", false)}, 2, time.Hour, true},
		{"outside the window", at("x", 4000, "k", false), burst(10), 5, time.Hour, true},
		{"window edge is exclusive", at("x", 3600, "k", false), []Dump{at("a", 0, "k", false)}, 1, time.Hour, true},
		{"just inside the window", at("x", 3599, "k", false), []Dump{at("a", 0, "k", false)}, 1, time.Hour, false},
		{"same second: name orders", at("b", 0, "k", false), []Dump{at("a", 0, "k", false), at("c", 0, "k", false)}, 1, time.Hour, false},
		{"same second: first by name", at("a", 0, "k", false), []Dump{at("b", 0, "k", false), at("c", 0, "k", false)}, 1, time.Hour, true},
		{"same second: a stored dump counts whatever its name", at("a", 0, "k", false),
			[]Dump{{Name: "b", Created: t0, Key: "k", Spent: true}}, 1, time.Hour, false},
		{"a stored dump long after does not count", at("a", 0, "k", false),
			[]Dump{{Name: "b", Created: t0.Add(2 * time.Hour), Key: "k", Spent: true}}, 1, time.Hour, true},
		{"count zero stores nothing", at("a", 0, "k", false), nil, 0, time.Hour, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := Allowed(tc.d, tc.others, tc.count, tc.window); got != tc.want {
				t.Fatalf("Allowed = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWindowOf(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(name string, sec int, throttled bool) Dump {
		return Dump{Name: name, Created: t0.Add(time.Duration(sec) * time.Second), Throttled: throttled, Decided: true}
	}
	const window = 10 * time.Second
	// a stored; b, c throttled in b's window; d stored; e throttled after it
	// closed, opening the next one with f.
	peers := []Dump{at("a", 0, false), at("b", 1, true), at("c", 5, true), at("d", 9, false), at("e", 11, true), at("f", 20, true), at("g", 21, true)}
	cases := []struct {
		d          Dump
		wantLeader string
		wantCount  int
		ready      bool
	}{
		{peers[1], "b", 2, true},
		{peers[2], "b", 2, true},
		{peers[4], "e", 2, true}, // e and f: f is 9s after e
		{peers[5], "e", 2, true},
		{peers[6], "g", 1, true}, // 10s after e: a new window
	}
	for _, tc := range cases {
		w, ready := WindowOf(tc.d, peers, window)
		if ready != tc.ready || w.Leader.Name != tc.wantLeader || w.Count != tc.wantCount {
			t.Errorf("%s: leader %s count %d ready %v, want %s %d %v", tc.d.Name, w.Leader.Name, w.Count, ready, tc.wantLeader, tc.wantCount, tc.ready)
		}
	}
	if w, _ := WindowOf(peers[1], peers, window); !w.Until.Equal(t0.Add(11 * time.Second)) {
		t.Errorf("window of b closes at %v", w.Until)
	}

	// An earlier dump not decided yet may be throttled: wait for it.
	undecided := append([]Dump{{Name: "0", Created: t0.Add(-time.Second)}}, peers...)
	if _, ready := WindowOf(peers[2], undecided, window); ready {
		t.Error("ready while an earlier dump is undecided")
	}
	// The same second orders by name, as the rate limit does.
	same := []Dump{at("y", 3, true), at("x", 3, true)}
	if w, _ := WindowOf(same[0], same, window); w.Leader.Name != "x" || w.Count != 2 {
		t.Errorf("leader %s count %d, want x 2", w.Leader.Name, w.Count)
	}
	if !Undecided([]Dump{{Name: "p", Created: t0}}, t0.Add(time.Second)) || Undecided([]Dump{{Name: "p", Created: t0.Add(time.Minute)}}, t0.Add(time.Second)) {
		t.Error("Undecided")
	}
}

// TestLedgerCountsWhatTheCacheDoesNotShowYet is the stale-cache race: a
// later dump was let through a moment ago, but the cache still shows it
// Pending, so an earlier one decided now does not count it and a second dump
// is stored where the limit allows one.
func TestLedgerCountsWhatTheCacheDoesNotShowYet(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	// "b" is ordered after "a" (same second, by name), and was let through.
	cached := func(bDecided bool) []Dump {
		return []Dump{
			{Name: "a", Created: t0, Key: "k"},
			{Name: "b", Created: t0, Key: "k", Spent: bDecided, Decided: bDecided},
		}
	}
	a := Dump{Name: "a", Created: t0, Key: "k"}
	if !Allowed(a, cached(false), 1, time.Hour) {
		t.Fatal("the race needs a stale cache under which a is allowed")
	}
	var l Ledger
	l.Spend("b", t0)
	others := cached(false)
	l.Apply(others)
	if Allowed(a, others, 1, time.Hour) {
		t.Fatal("a was allowed beside b, which the ledger let through: two dumps stored where the limit is one")
	}
	// Once the cache shows b decided, the ledger forgets it.
	others = cached(true)
	l.Apply(others)
	if l.Len() != 0 {
		t.Fatalf("ledger holds %d dumps after the cache caught up, want 0", l.Len())
	}
	if Allowed(a, others, 1, time.Hour) {
		t.Fatal("a allowed beside b once the cache shows b")
	}
	// Dumps the cache never shows (deleted meanwhile) are forgotten in time.
	l.Spend("gone", t0)
	l.Spend("c", t0.Add(ledgerTTL+time.Second))
	if l.Len() != 1 {
		t.Fatalf("ledger holds %d dumps, want 1 (the old one pruned)", l.Len())
	}
}
