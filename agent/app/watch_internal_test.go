package app

import (
	"testing"
	"time"
)

func TestCaptureWatch(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var w captureWatch
	if got := w.longest(t0); got != 0 {
		t.Fatalf("idle workers: %v", got)
	}
	w.begin(0, t0)
	w.begin(3, t0.Add(time.Minute))
	for _, tc := range []struct {
		at   time.Duration
		want time.Duration
	}{
		{0, 0},
		{90 * time.Second, 90 * time.Second},
		{3 * time.Minute, 3 * time.Minute},
	} {
		if got := w.longest(t0.Add(tc.at)); got != tc.want {
			t.Errorf("at +%v: longest %v, want %v", tc.at, got, tc.want)
		}
	}
	w.end(0)
	if got := w.longest(t0.Add(3 * time.Minute)); got != 2*time.Minute {
		t.Errorf("after the first ended: %v, want 2m", got)
	}
	w.end(3)
	if got := w.longest(t0.Add(time.Hour)); got != 0 {
		t.Errorf("all ended: %v", got)
	}
}
