package app_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/app"
	apiv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/scheme"
)

// BenchmarkDetectionLatency measures the time from a core file's completion
// (its last write closed, its process gone) to its CoreDump existing in the
// API server, over 200 files written one after another, with fsnotify and
// with polling alone. It reports p50 and p99 in milliseconds.
func BenchmarkDetectionLatency(b *testing.B) {
	for _, mode := range []struct {
		name  string
		watch bool
		poll  time.Duration
	}{
		{"watch", true, 10 * time.Second},
		{"poll-only-1s", false, time.Second},
	} {
		b.Run(mode.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				lat := detectionLatencies(b, 200, mode.watch, mode.poll)
				b.ReportMetric(percentile(lat, 50), "p50-ms")
				b.ReportMetric(percentile(lat, 99), "p99-ms")
				b.ReportMetric(float64(len(lat)), "files")
			}
		})
	}
}

func detectionLatencies(b *testing.B, n int, watchMode bool, poll time.Duration) []float64 {
	h := newBenchHarness(b, func(c *app.Config) {
		c.DisableWatch = !watchMode
		c.PollInterval = poll
		// Files name a host PID; with /proc visible a file is complete
		// once that process is gone and its size has been confirmed.
		c.SettleTime = 2 * time.Second
	})
	wc, err := client.NewWithWatch(restCfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		b.Fatal(err)
	}
	var list apiv1.CoreDumpList
	w, err := wc.Watch(context.Background(), &list, client.InNamespace(ns))
	if err != nil {
		b.Fatal(err)
	}
	defer w.Stop()
	var mu sync.Mutex
	created := map[string]time.Time{}
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			if cd, ok := ev.Object.(*apiv1.CoreDump); ok && cd.Spec.PolicyName == h.cfg.Policy {
				mu.Lock()
				created[cd.Spec.FileName] = time.Now()
				mu.Unlock()
			}
		}
	}()
	h.startBench(b)
	time.Sleep(500 * time.Millisecond)

	completed := map[string]time.Time{}
	for i := range n {
		name := fmt.Sprintf("core.bench-%d.app.%d.11.1767225600", i, 900000+i)
		path := filepath.Join(h.dir, name)
		if err := os.WriteFile(path, make([]byte, 64<<10), 0o600); err != nil {
			b.Fatal(err)
		}
		completed[name] = time.Now()
		time.Sleep(20 * time.Millisecond)
	}
	deadline := time.Now().Add(poll + 30*time.Second)
	for {
		mu.Lock()
		got := len(created)
		mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(created) < n {
		b.Fatalf("only %d of %d files became CoreDumps", len(created), n)
	}
	var lat []float64
	for name, done := range completed {
		lat = append(lat, float64(created[name].Sub(done).Microseconds())/1000)
	}
	return lat
}

func percentile(v []float64, p float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	i := int(float64(len(s)-1) * p / 100)
	return s[i]
}
