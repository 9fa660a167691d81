package app

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"

	"github.com/coredog/coredog/agent/detect"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/pki"
)

type metrics struct {
	detectLatency prometheus.Histogram
	found         *prometheus.CounterVec
	localBytes    prometheus.Gauge
	maxLocalBytes prometheus.Gauge
	refused       *prometheus.CounterVec
	counted       prometheus.Counter
	createErrors  prometheus.Counter
	mode          *prometheus.GaugeVec
	info          *prometheus.GaugeVec
	leaseRenewed  prometheus.Gauge
	leaseErrors   prometheus.Counter
}

// refusedReasons are the reasons the agent refuses a file for; their series
// exist from the start, so that an alert on their increase sees the first one.
var refusedReasons = []string{coredogv1.ReasonQuotaExceeded, "HardLink"}

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
		maxLocalBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coredog_agent_max_local_bytes",
			Help: "The policy's maxNodeUsage: most bytes of core files the agent keeps on the node; 0 for no limit.",
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
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coredog_agent_info",
			Help: "Always 1: the agent's core_pattern mode (Observe, Manage or Pipe). Its policy and node are the scrape target's labels.",
		}, []string{"core_pattern"}),
		leaseRenewed: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coredog_agent_lease_renewed_timestamp_seconds",
			Help: "When the agent last renewed its Lease (its heartbeat), in seconds since the epoch; 0 before the first renewal.",
		}),
		leaseErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coredog_agent_lease_renew_errors_total",
			Help: "Failed renewals of the agent's Lease.",
		}),
	}
	for _, r := range refusedReasons {
		m.refused.WithLabelValues(r)
	}
	reg.MustRegister(m.detectLatency, m.found, m.localBytes, m.maxLocalBytes, m.refused, m.counted, m.createErrors, m.mode,
		m.info, m.leaseRenewed, m.leaseErrors)
	return m
}

// describe records what the agent was told: its mode and its disk limit.
func (m *metrics) describe(cfg Config, set settings) {
	m.info.WithLabelValues(cfg.CorePattern).Set(1)
	m.maxLocalBytes.Set(float64(set.limits.MaxUsage))
}

// heartbeat records one Lease renewal.
func (m *metrics) heartbeat(err error, now time.Time) {
	if err != nil {
		m.leaseErrors.Inc()
		return
	}
	m.leaseRenewed.Set(float64(now.UnixNano()) / 1e9)
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

// metricsPath is the only path the metrics endpoint serves.
const metricsPath = "/metrics"

// serveMetrics serves reg on cfg.MetricsAddr until ctx is done. By default
// as the manager does (controller-runtime's filter, the kubebuilder
// scaffold's choice): HTTPS with a certificate made at start, every caller
// authenticated with a TokenReview and authorized with a SubjectAccessReview
// for get on /metrics, so that only what the metrics-reader ClusterRole is
// bound to reads which workloads crash on this node. The agent's
// ServiceAccount may create those two reviews and nothing more beyond its
// namespace (docs/security.md). --metrics-secure=false serves plain HTTP,
// for tests on loopback.
func serveMetrics(ctx context.Context, cfg Config, restCfg *rest.Config, reg *prometheus.Registry, log logr.Logger) error {
	if cfg.MetricsAddr == "" || cfg.MetricsAddr == "0" {
		return nil
	}
	h := promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError})
	if cfg.InsecureMetrics {
		return serveHTTP(ctx, cfg.MetricsAddr, h)
	}
	httpClient, err := rest.HTTPClientFor(restCfg)
	if err != nil {
		return fmt.Errorf("metrics authentication client: %w", err)
	}
	filter, err := filters.WithAuthenticationAndAuthorization(restCfg, httpClient)
	if err != nil {
		return fmt.Errorf("metrics authentication: %w", err)
	}
	if h, err = filter(log.WithValues("path", metricsPath), h); err != nil {
		return fmt.Errorf("metrics authentication: %w", err)
	}
	cert, err := selfSignedCert(time.Now())
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(metricsPath, h)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	l, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.MetricsAddr)
	if err != nil {
		return err
	}
	return serveUntilDone(ctx, srv, func() error { return srv.ServeTLS(l, "", "") })
}

// selfSignedCert is the metrics endpoint's certificate: made at start, kept
// in memory. It encrypts; scrapers are checked by their token, not the
// endpoint by its certificate (as controller-runtime does for the manager).
func selfSignedCert(now time.Time) (tls.Certificate, error) {
	ca, err := pki.NewCA("coredog-agent-metrics", now)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("metrics certificate: %w", err)
	}
	kp, err := ca.IssueServer([]string{"localhost"}, now)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("metrics certificate: %w", err)
	}
	return tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
}
