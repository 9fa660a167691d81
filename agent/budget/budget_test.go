package budget

import (
	"fmt"
	"testing"
	"time"
)

// crash i is of key at t0+at and would get CoreDump "d<i>".
type crash struct {
	at   time.Duration
	key  string
	want Decision
}

func TestDecide(t *testing.T) {
	l := Limits{NodeBurst: 3, NodeInterval: 10 * time.Second, KeyBurst: 2, KeyInterval: time.Minute}
	for _, tc := range []struct {
		name    string
		crashes []crash
		gone    map[int][]string // before crash i, these CoreDumps are gone
	}{
		{"a key's burst, then its crashes are counted on its latest CoreDump", []crash{
			{0, "a", Decision{Create: true}},
			{0, "a", Decision{Create: true}},
			{0, "a", Decision{Target: "d1"}},
			{time.Second, "a", Decision{Target: "d1"}},
		}, nil},
		{"a key refills one per interval", []crash{
			{0, "a", Decision{Create: true}},
			{0, "a", Decision{Create: true}},
			{59 * time.Second, "a", Decision{Target: "d1"}},
			{60 * time.Second, "a", Decision{Create: true}},
			{61 * time.Second, "a", Decision{Target: "d3"}},
		}, nil},
		{"the node's burst bounds new keys; a new key is counted on the node's latest", []crash{
			{0, "a", Decision{Create: true}},
			{0, "b", Decision{Create: true}},
			{0, "c", Decision{Create: true}},
			{0, "d", Decision{Target: "d2", Other: true}},
			{0, "a", Decision{Target: "d0"}},
			{10 * time.Second, "d", Decision{Create: true}},
			{10 * time.Second, "e", Decision{Target: "d5", Other: true}},
		}, nil},
		{"a key whose CoreDumps are gone gets a new one though its bucket is spent", []crash{
			{0, "a", Decision{Create: true}},
			{0, "a", Decision{Create: true}},
			{0, "a", Decision{Target: "d1"}},
			{0, "a", Decision{Create: true}},
		}, map[int][]string{3: {"d1"}}},
		{"with no CoreDump left on the node, a crash gets one though the node's bucket is spent", []crash{
			{0, "a", Decision{Create: true}},
			{0, "b", Decision{Create: true}},
			{0, "c", Decision{Create: true}},
			{0, "d", Decision{Create: true}},
			{0, "e", Decision{Target: "d3", Other: true}},
		}, map[int][]string{3: {"d0", "d1", "d2"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(l)
			t0 := time.Unix(1767225600, 0)
			for i, c := range tc.crashes {
				for _, g := range tc.gone[i] {
					b.Gone(g)
				}
				got := b.Decide(c.key, fmt.Sprintf("d%d", i), t0.Add(c.at))
				if got != c.want {
					t.Errorf("crash %d (%s at %s): got %+v, want %+v", i, c.key, c.at, got, c.want)
				}
			}
		})
	}
}

// TestStormIsBounded: a key crashing 50 times a second for a minute gets at
// most the bursts plus the refills, and every crash is a CoreDump or counted.
func TestStormIsBounded(t *testing.T) {
	l := Limits{NodeBurst: 30, NodeInterval: 6 * time.Second, KeyBurst: 5, KeyInterval: 10 * time.Minute}
	b := New(l)
	t0 := time.Unix(1767225600, 0)
	created, counted := 0, 0
	const crashes = 50 * 60
	for i := range crashes {
		d := b.Decide("a", fmt.Sprint(i), t0.Add(time.Duration(i)*20*time.Millisecond))
		switch {
		case d.Create:
			created++
		case d.Target != "":
			counted++
		}
	}
	if created != 5 || created+counted != crashes {
		t.Errorf("created %d, counted %d of %d crashes; want 5 created and every crash accounted for", created, counted, crashes)
	}
}

// TestKeysAreBounded: a pod that crashes under a new signature each time
// cannot grow the agent's memory without bound.
func TestKeysAreBounded(t *testing.T) {
	b := New(Limits{NodeBurst: 1, NodeInterval: time.Hour, KeyBurst: 1, KeyInterval: time.Hour})
	t0 := time.Unix(1767225600, 0)
	for i := range 3 * maxKeys {
		d := b.Decide(fmt.Sprint("sig-", i), fmt.Sprint("d", i), t0)
		if i > 0 && (d.Create || d.Target != "d0" || !d.Other) {
			t.Fatalf("crash %d: %+v; want counted on d0 as another signature's", i, d)
		}
	}
	if len(b.keys) > maxKeys {
		t.Errorf("%d keys remembered, more than %d", len(b.keys), maxKeys)
	}
}

// TestRecordCarriesTheBudgetOverARestart: CoreDumps made before a restart
// spend the buckets as they did then, and stay the targets of their keys.
func TestRecordCarriesTheBudgetOverARestart(t *testing.T) {
	l := Limits{NodeBurst: 3, NodeInterval: 10 * time.Second, KeyBurst: 2, KeyInterval: time.Minute}
	t0 := time.Unix(1767225600, 0)
	for _, tc := range []struct {
		name  string
		after time.Duration // from the last recorded CoreDump to the crash
		key   string
		want  Decision
	}{
		{"the key's burst is spent", time.Second, "a", Decision{Target: "old-a2"}},
		{"the node's burst is spent", time.Second, "c", Decision{Target: "old-b", Other: true}},
		{"the node's bucket refills meanwhile", 10 * time.Second, "c", Decision{Create: true}},
		{"and the key's", time.Minute, "a", Decision{Create: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := New(l)
			b.Record("a", "old-a1", t0)
			b.Record("a", "old-a2", t0)
			b.Record("b", "old-b", t0)
			if got := b.Decide(tc.key, "new", t0.Add(tc.after)); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}
