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
		for i := 0; i < n; i++ {
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
