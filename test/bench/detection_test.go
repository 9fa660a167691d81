package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"
)

// detectionResult is one detection mode's latencies.
type detectionResult struct {
	Mode     string
	Watch    bool
	Poll     time.Duration
	Files    int
	P50, P99 float64 // milliseconds
	Max      float64
}

const (
	detectionFiles = 200
	detectionGap   = 20 * time.Millisecond
	detectionBytes = 64 << 10
)

// measureDetection runs one agent process and writes detectionFiles files
// into its directory in place, as the kernel writes a core, one every
// detectionGap; a file is complete when the write returns (its process, a
// PID that does not exist, is gone). Latency is completion to the CoreDump's
// ADDED event at the benchmark's informer. No manager runs, so nothing else
// competes for the CPU.
func measureDetection(b *testing.B, s *suite, mode string, watch bool, poll time.Duration) detectionResult {
	node := "det-" + mode
	dir := filepath.Join(s.policyDir("det"), node)
	agent, err := s.startAgent(agentOpts{policy: "det", node: node, dir: dir, poll: poll, disableWatch: !watch})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		stopAll(agent)
		if err := within(2*time.Minute, func(ctx context.Context) error { return s.purge(ctx, "det") }); err != nil {
			b.Error(err)
		}
		_ = os.RemoveAll(dir)
	}()
	time.Sleep(500 * time.Millisecond)

	completed := map[string]time.Time{}
	data := make([]byte, detectionBytes)
	copy(data, "\x7fELF-not-really")
	for i := range detectionFiles {
		name := fmt.Sprintf("core.bench-%d.app.%d.11.1767225600", i, 900000+i)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
		completed[name] = time.Now()
		time.Sleep(detectionGap)
	}
	err = within(poll+60*time.Second, func(ctx context.Context) error {
		return s.tracker.wait(ctx, func() (bool, error) {
			for name := range completed {
				if _, ok := s.tracker.byFile[[2]string{"det", name}]; !ok {
					return false, nil
				}
			}
			return true, nil
		})
	})
	if err != nil {
		b.Fatalf("not every file became a CoreDump: %v\n%s", err, agent.Tail(20))
	}
	var lat []float64
	for name, done := range completed {
		d, _ := s.tracker.find("det", name)
		lat = append(lat, float64(d.Added.Sub(done).Microseconds())/1000)
	}
	sort.Float64s(lat)
	return detectionResult{Mode: mode, Watch: watch, Poll: poll, Files: len(lat),
		P50: percentile(lat, 50), P99: percentile(lat, 99), Max: lat[len(lat)-1]}
}

// percentile of sorted values, nearest rank below.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(float64(len(sorted)-1)*p/100)]
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return percentile(s, 50)
}
