package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const (
	idleFiles    = 10000
	idleFileSize = 4096
	idlePoll     = 10 * time.Second
	idleWindow   = time.Minute
)

// idleResult is an agent's cost while nothing happens.
type idleResult struct {
	Files int
	Poll  time.Duration
	// Capture is how long the agent took to capture the files at start.
	Capture float64
	Window  float64
	// CPUShare is CPU seconds per second over the window, in percent of one core.
	CPUShare float64
	CPU      float64
	// RSSMax and RSSAvg are sampled once a second over the window; HWM is
	// VmHWM at the end, reset at the start of the window when the kernel
	// allows (HWMReset).
	RSSMax, RSSAvg, HWM int64
	HWMReset            bool
	// AnonMax and FileMax are the largest RssAnon and RssFile samples.
	AnonMax, FileMax int64
	// StartHWM is the peak while capturing the files.
	StartHWM int64
}

// runIdle starts an agent on a directory of idleFiles files, lets it capture
// them all (no manager runs, so their CoreDumps stay Pending and the files
// stay), and then watches its CPU time and RSS for idleWindow, with polling
// every idlePoll.
func runIdle(b *testing.B, s *suite) idleResult {
	const policy = "idle"
	res := idleResult{Files: idleFiles, Poll: idlePoll}
	dir := filepath.Join(s.policyDir(policy), "cores")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, idleFileSize)
	copy(data, "\x7fELF-not-really")
	for i := range idleFiles {
		name := fmt.Sprintf("core.idle-%d.app.%d.11.1767225600", i, 2_000_000+i)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	// Files already 100 ms old at the first look are complete at once.
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	agent, err := s.startAgent(agentOpts{policy: policy, node: policy, dir: dir, poll: idlePoll})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		stopAll(agent)
		if err := within(5*time.Minute, func(ctx context.Context) error { return s.purge(ctx, policy) }); err != nil {
			b.Error(err)
		}
		_ = os.RemoveAll(dir)
	}()
	err = within(10*time.Minute, func(ctx context.Context) error {
		return s.tracker.waitCounts(ctx, policy, idleFiles, 0)
	})
	if err != nil {
		b.Fatalf("idle: %v\n%s", err, agent.Tail(20))
	}
	res.Capture = time.Since(start).Seconds()
	logf("idle: the agent captured %d files in %.1fs", idleFiles, res.Capture)
	// Let the capture burst's garbage go before measuring.
	time.Sleep(15 * time.Second)

	pid := pidOf(agent)
	st0, err := readProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	res.StartHWM = st0.HWM
	res.HWMReset = resetPeak(pid) == nil
	st0, _ = readProc(pid)
	t0 := time.Now()
	var sum int64
	var n int64
	for time.Since(t0) < idleWindow {
		time.Sleep(time.Second)
		st, err := readProc(pid)
		if err != nil {
			b.Fatal(err)
		}
		res.RSSMax = max(res.RSSMax, st.RSS)
		res.AnonMax, res.FileMax = max(res.AnonMax, st.Anon), max(res.FileMax, st.File)
		sum += st.RSS
		n++
	}
	st1, err := readProc(pid)
	if err != nil {
		b.Fatal(err)
	}
	res.Window = time.Since(t0).Seconds()
	res.CPU = (st1.CPU - st0.CPU).Seconds()
	res.CPUShare = 100 * res.CPU / res.Window
	res.RSSAvg = sum / max(n, 1)
	res.HWM = st1.HWM
	logf("idle: CPU %.2f%% of a core (%.2f s in %.0f s); RSS max %.1f MiB (anonymous %.1f, file-backed %.1f), mean %.1f MiB, peak %.1f MiB (reset: %v); peak while capturing %.1f MiB",
		res.CPUShare, res.CPU, res.Window, mibOf(res.RSSMax), mibOf(res.AnonMax), mibOf(res.FileMax), mibOf(res.RSSAvg), mibOf(res.HWM), res.HWMReset, mibOf(res.StartHWM))
	if rollup, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		logf("idle: the agent's /proc/%d/smaps_rollup at the end of the window:\n%s", pid, rollup)
	}
	return res
}
