package app

import (
	"sync/atomic"
	"time"
)

// maxCaptureTime is how long one capture may take before /healthz fails.
// A capture reads a file's headers and notes and makes one API call; one
// that runs for minutes is stuck (a hung mount, a call that never returns),
// and with few workers it holds every file behind it, the disk guard
// included: the kubelet's restart is the remedy.
const maxCaptureTime = 2 * time.Minute

// captureWatch records when each capture worker's current capture began.
type captureWatch struct {
	started [captureWorkers]atomic.Int64 // UnixNano; 0 while idle
}

func (w *captureWatch) begin(worker int, now time.Time) { w.started[worker].Store(now.UnixNano()) }

func (w *captureWatch) end(worker int) { w.started[worker].Store(0) }

// longest is the age of the oldest capture still running at now, 0 when
// every worker is idle.
func (w *captureWatch) longest(now time.Time) time.Duration {
	var oldest time.Duration
	for i := range w.started {
		if s := w.started[i].Load(); s != 0 {
			oldest = max(oldest, now.Sub(time.Unix(0, s)))
		}
	}
	return oldest
}
