package controllers

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Metrics are the manager's CoreDog metrics, on its metrics endpoint.
type Metrics struct {
	dumps         *prometheus.CounterVec
	uploadBytes   prometheus.Counter
	uploadSeconds prometheus.Histogram
	crashToUpload prometheus.Histogram
}

var (
	metricsOnce sync.Once
	theMetrics  *Metrics
)

// managerMetrics registers the metrics once per process (tests start
// several managers).
func managerMetrics() *Metrics {
	metricsOnce.Do(func() {
		theMetrics = &Metrics{
			dumps: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "coredog_coredumps_total",
				Help: "Core dumps that reached a final phase, by the crashed pod's namespace, signal and phase.",
			}, []string{"namespace", "signal", "phase"}),
			uploadBytes: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "coredog_upload_bytes_total",
				Help: "Bytes written to storage (compressed dumps).",
			}),
			uploadSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "coredog_upload_duration_seconds",
				Help:    "Time to stream one dump from its agent into storage.",
				Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
			}),
			crashToUpload: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name:    "coredog_crash_to_upload_seconds",
				Help:    "Time from the crash to the dump being in storage.",
				Buckets: prometheus.ExponentialBuckets(0.25, 2, 14),
			}),
		}
		metrics.Registry.MustRegister(theMetrics.dumps, theMetrics.uploadBytes, theMetrics.uploadSeconds, theMetrics.crashToUpload)
	})
	return theMetrics
}

// countDump counts a dump that reached a final phase; a nil Metrics (in
// tests that drive a reconciler by hand) counts nothing.
func (m *Metrics) countDump(namespace, signal, phase string) {
	if m == nil {
		return
	}
	m.dumps.WithLabelValues(namespace, signal, phase).Inc()
}

func (m *Metrics) observeUpload(bytes int64, took time.Duration, crashed, uploaded time.Time) {
	if m == nil {
		return
	}
	m.uploadBytes.Add(float64(bytes))
	m.uploadSeconds.Observe(took.Seconds())
	if !crashed.IsZero() && uploaded.After(crashed) {
		m.crashToUpload.Observe(uploaded.Sub(crashed).Seconds())
	}
}
