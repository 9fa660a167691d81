package bench

import (
	"strings"
	"testing"
	"time"
)

// The benchmarks run in the order they are declared here, which is the order
// of docs/benchmarks.md. Each measures once per b.N iteration (run them with
// -benchtime 1x) and reports its figures with b.ReportMetric; the report
// takes the median of the iterations.

// BenchmarkDetectionLatency: file completion to CoreDump created, with the
// real agent process, in watch mode and in poll-only mode.
func BenchmarkDetectionLatency(b *testing.B) {
	s := need(b)
	for _, m := range []struct {
		name  string
		watch bool
		poll  time.Duration
	}{
		{"watch", true, 10 * time.Second},
		{"poll-only-1s", false, time.Second},
		{"poll-only-10s", false, 10 * time.Second},
	} {
		b.Run(m.name, func(b *testing.B) {
			for range b.N {
				r := measureDetection(b, s, m.name, m.watch, m.poll)
				rep.add(func(r0 *results) { r0.Detection = append(r0.Detection, r) })
				b.ReportMetric(r.P50, "p50-ms")
				b.ReportMetric(r.P99, "p99-ms")
				b.ReportMetric(float64(r.Files), "files")
			}
		})
	}
}

// BenchmarkPipeline: one dump from file completion to Uploaded through the
// agent, the manager and storage, per size and layout, compression and
// store, with fresh processes each time; and the flate peer on the same
// bytes, once per size.
func BenchmarkPipeline(b *testing.B) {
	s := need(b)
	for _, l := range layouts {
		for _, c := range compressions {
			for _, store := range []string{"file", "s3"} {
				b.Run(l.Label+"/"+strings.ToLower(string(c))+"/"+store, func(b *testing.B) {
					for range b.N {
						var peer func(string)
						if !rep.hasPeer(l.Size) {
							peer = func(path string) {
								p, err := flatePeer(path)
								if err != nil {
									b.Fatal(err)
								}
								rep.add(func(r *results) { r.Peers = append(r.Peers, p) })
								logf("flate peer, %s: %.1f MiB/s, ratio %.2f", l.Label, p.MiBps, p.Ratio)
							}
						}
						r := runPipeline(b, s, l, store, c, peer)
						rep.add(func(r0 *results) { r0.Pipeline = append(r0.Pipeline, r) })
						b.ReportMetric(r.MiBps, "MiB/s")
						b.ReportMetric(r.Seconds, "s")
						b.ReportMetric(float64(l.Size)/float64(max(r.Stored, 1)), "ratio")
						b.ReportMetric(mibOf(r.AgentHWM), "agent-peak-MiB")
						b.ReportMetric(mibOf(r.ManagerHWM), "manager-peak-MiB")
						b.ReportMetric(r.AgentCPU, "agent-cpu-s")
						b.ReportMetric(r.ManagerCPU, "manager-cpu-s")
					}
				})
			}
		}
	}
}

// BenchmarkCrashToStored: a real crash with 256 MiB of touched memory, from
// the signal to Uploaded.
func BenchmarkCrashToStored(b *testing.B) {
	s := need(b)
	for _, store := range []string{"s3", "file"} {
		b.Run(store, func(b *testing.B) {
			for range b.N {
				sum := runCrashes(b, s, store, 3)
				rep.add(func(r *results) { r.Crash = append(r.Crash, sum) })
				var sig []float64
				for _, c := range sum.Runs {
					sig = append(sig, c.FromSignal)
				}
				b.ReportMetric(median(sig), "s-median")
				b.ReportMetric(mibOf(sum.Runs[0].CoreSize), "core-MiB")
				b.ReportMetric(mibOf(sum.AgentHWM), "agent-peak-MiB")
				b.ReportMetric(mibOf(sum.ManagerHWM), "manager-peak-MiB")
			}
		})
	}
}

// BenchmarkBurst: 1,000 dumps across 100 agent processes until all are Uploaded.
func BenchmarkBurst(b *testing.B) {
	s := need(b)
	for range b.N {
		r := runBurst(b, s)
		rep.add(func(r0 *results) { r0.Burst = append(r0.Burst, r) })
		b.ReportMetric(r.Seconds, "s")
		b.ReportMetric(float64(r.Dumps)/r.Seconds, "dumps/s")
		b.ReportMetric(r.ManagerCPU, "manager-cpu-s")
		b.ReportMetric(mibOf(r.ManagerHWM), "manager-peak-MiB")
	}
}

// BenchmarkIdleAgent: an agent with 10,000 captured files, polling every
// 10 s, over a minute.
func BenchmarkIdleAgent(b *testing.B) {
	s := need(b)
	for range b.N {
		r := runIdle(b, s)
		rep.add(func(r0 *results) { r0.Idle = append(r0.Idle, r) })
		b.ReportMetric(r.CPUShare, "cpu-%")
		b.ReportMetric(mibOf(r.RSSMax), "rss-max-MiB")
		b.ReportMetric(mibOf(r.HWM), "peak-MiB")
	}
}
