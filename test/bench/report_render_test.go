package bench

import (
	"strings"
	"testing"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// TestReportRenders renders made-up results: a cheap check that the report
// code, which otherwise runs only after a full benchmark run, works.
func TestReportRenders(t *testing.T) {
	p := &reporter{started: time.Now(), ended: time.Now()}
	p.r = results{
		Detection: []detectionResult{{Mode: "watch", Watch: true, Poll: 10 * time.Second, Files: 200, P50: 100, P99: 150, Max: 160}},
		Pipeline: []pipelineResult{{Layout: layouts[0], Store: "file", Compression: coredogv1.CompressionZstd, Seconds: 1, MiBps: 256,
			Stored: 50 << 20, AgentHWM: 30 << 20, ManagerHWM: 70 << 20}},
		Peers: []peerResult{{Size: layouts[0].Size, MiBps: 100, Ratio: 5}},
		Crash: []crashSummary{{Store: "s3", Runs: []crashResult{{CoreSize: 256 << 20, FromSignal: 1}}}},
		Burst: []burstResult{{Agents: 100, Dumps: 1000, Seconds: 40, FileSize: 1 << 20}},
		Idle:  []idleResult{{Files: 10000, Window: 60, CPUShare: 0.5}},
	}
	var b strings.Builder
	p.render(&b, true)
	for _, want := range []string{"## Summary", "## 1. Detection latency", "## 2. Pipeline", "## 3. Crash", "## 4. Burst", "## 5. Idle", "10,000", "**missed**"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
}
