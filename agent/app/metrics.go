package app

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coredog/coredog/agent/detect"
)

type metrics struct {
	detectLatency prometheus.Histogram
	found         *prometheus.CounterVec
	localBytes    prometheus.Gauge
	refused       *prometheus.CounterVec
	counted       prometheus.Counter
	createErrors  prometheus.Counter
	mode          *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		detectLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "coredog_agent_detect_latency_seconds",
			Help:    "Time from a core file's last write to its CoreDump being created.",
			Buckets: []float64{0.05, 0.1, 0.2, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120},
		}),
		found: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coredog_agent_files_found_total",
			Help: "Complete core files found, by how they were first noticed (Watch, Poll, Rescan).",
		}, []string{"source"}),
		localBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coredog_agent_local_bytes",
			Help: "Bytes of core files the agent keeps on the node.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coredog_agent_refused_dumps_total",
			Help: "Core files the agent did not keep, by reason.",
		}, []string{"reason"}),
		counted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coredog_agent_counted_crashes_total",
			Help: "Crashes past the creation budget, counted on an existing CoreDump's series instead of getting one; their files are removed.",
		}),
		createErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coredog_agent_coredump_create_errors_total",
			Help: "Failed attempts to create a CoreDump (each is retried).",
		}),
		mode: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coredog_agent_detection_mode",
			Help: "1 for the way the agent finds files now: watch (fsnotify and polling) or poll (polling alone).",
		}, []string{"mode"}),
	}
	reg.MustRegister(m.detectLatency, m.found, m.localBytes, m.refused, m.counted, m.createErrors, m.mode)
	return m
}

func (m *metrics) setMode(mode string) {
	for _, known := range []string{detect.ModeWatch, detect.ModePoll} {
		v := 0.0
		if known == mode {
			v = 1
		}
		m.mode.WithLabelValues(known).Set(v)
	}
}
