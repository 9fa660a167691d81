package controllers

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Bounds on the label sets of the per-crash metrics. Namespaces, workloads
// and signatures come from what crashed, and a workload that crashes in new
// ways (or a node that invents CoreDumps) must not grow the manager's memory
// or its scrape without bound: past the cap the signature is otherSignature.
const (
	maxCrashSeries     = 2000
	maxSignatureSeries = 1000
	otherSignature     = "_other"
	// stateListTimeout bounds the cache reads of one scrape.
	stateListTimeout = 5 * time.Second
)

// labelPolicy is the label that names a CoreDumpPolicy.
const labelPolicy = "policy"

// Upload attempt results (coredog_upload_attempts_total's result label).
const (
	resultSucceeded = "succeeded"
	resultFailed    = "failed"
)

// Metrics are the manager's CoreDog metrics, on its metrics endpoint.
// docs/alerts.md and the chart's dashboard are built on them; a test in
// test/e2e checks that every name they use is exported.
type Metrics struct {
	dumps          *prometheus.CounterVec
	crashes        *prometheus.CounterVec
	uploadAttempts *prometheus.CounterVec
	uploadBytes    prometheus.Counter
	uploadSeconds  prometheus.Histogram
	crashToUpload  prometheus.Histogram

	mu          sync.Mutex
	crashSeries map[[5]string]struct{}
}

var (
	metricsOnce sync.Once
	theMetrics  *Metrics
	// stateSource is what the state collector reads: the cache of the
	// manager set up last (tests start several in one process).
	stateSource atomic.Pointer[stateReader]
)

type stateReader struct {
	reader    client.Reader
	namespace string
}

// managerMetrics registers the metrics once per process (tests start
// several managers).
func managerMetrics() *Metrics {
	metricsOnce.Do(func() {
		theMetrics = &Metrics{
			dumps: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "coredog_coredumps_total",
				Help: "Core dumps that reached a final phase, by the crashed pod's namespace, signal and phase.",
			}, []string{"namespace", "signal", "phase"}),
			crashes: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "coredog_crashes_total",
				Help: "Core dumps that reached a final phase, by the crashed pod's namespace and workload, crash signature, phase and reason " +
					"(Throttled: over the policy's rate limit). At most 2000 label sets; later signatures count as \"_other\".",
			}, []string{"namespace", "workload_type", "workload", "signature", "phase", "reason"}),
			uploadAttempts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "coredog_upload_attempts_total",
				Help: "Attempts to stream a dump into storage, by policy and result (succeeded, failed).",
			}, []string{labelPolicy, "result"}),
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
			crashSeries: map[[5]string]struct{}{},
		}
		metrics.Registry.MustRegister(theMetrics.dumps, theMetrics.crashes, theMetrics.uploadAttempts,
			theMetrics.uploadBytes, theMetrics.uploadSeconds, theMetrics.crashToUpload, stateCollector{})
	})
	return theMetrics
}

// watchState points the state collector at a manager's cache.
func watchState(r client.Reader, namespace string) {
	stateSource.Store(&stateReader{reader: r, namespace: namespace})
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

// uploadAttempt counts one attempt of a policy's upload.
func (m *Metrics) uploadAttempt(policy string, err error) {
	if m == nil {
		return
	}
	result := resultSucceeded
	if err != nil {
		result = resultFailed
	}
	m.uploadAttempts.WithLabelValues(policy, result).Inc()
}

// finished counts a dump that reached a final phase; a nil Metrics (in
// tests that drive a reconciler by hand) counts nothing.
func (m *Metrics) finished(cd *coredogv1.CoreDump) {
	if m == nil {
		return
	}
	ns, kind, workload := podLabels(cd)
	m.dumps.WithLabelValues(ns, cd.Spec.Process.SignalName, string(cd.Status.Phase)).Inc()
	key := [5]string{ns, kind, workload, cd.Spec.Signature, string(cd.Status.Phase)}
	m.mu.Lock()
	if _, seen := m.crashSeries[key]; !seen {
		if len(m.crashSeries) >= maxCrashSeries {
			key[3] = otherSignature
		}
		m.crashSeries[key] = struct{}{}
	}
	m.mu.Unlock()
	m.crashes.WithLabelValues(key[0], key[1], key[2], key[3], key[4], cd.Status.Reason).Inc()
}

// podLabels are the crashed pod's namespace and workload, empty when the
// pod was not resolved.
func podLabels(cd *coredogv1.CoreDump) (namespace, kind, workload string) {
	if p := cd.Status.Pod; p != nil {
		return p.Namespace, p.WorkloadKind, p.WorkloadName
	}
	return "", "", ""
}

// stateCollector reports, at each scrape, what the manager's cache holds:
// CoreDumps by policy, phase and reason, each policy's agents, and when each
// crash signature was first seen. State read from the API survives a
// restart or a new leader, where counters start again; every replica reports
// the same numbers, so alerts take the max over replicas.
type stateCollector struct{}

var (
	coreDumpObjectsDesc = prometheus.NewDesc("coredog_coredump_objects",
		"CoreDumps that exist now, by policy, phase and reason (Uploading with reason UploadRetrying: its last upload attempt failed).",
		[]string{labelPolicy, "phase", "reason"}, nil)
	agentsDesiredDesc = prometheus.NewDesc("coredog_policy_agents_desired",
		"Nodes a policy's agents should run on (the DaemonSet's desired count).", []string{labelPolicy}, nil)
	agentsReadyDesc = prometheus.NewDesc("coredog_policy_agents_ready",
		"A policy's agents that are ready.", []string{labelPolicy}, nil)
	signatureFirstSeenDesc = prometheus.NewDesc("coredog_crash_signature_first_seen_timestamp_seconds",
		"When the oldest CoreDump kept of a crash signature in a workload was detected, in seconds since the epoch (at most 1000 signatures, the newest).",
		[]string{"namespace", "workload_type", "workload", "signature"}, nil)
)

func (stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- coreDumpObjectsDesc
	ch <- agentsDesiredDesc
	ch <- agentsReadyDesc
	ch <- signatureFirstSeenDesc
}

func (stateCollector) Collect(ch chan<- prometheus.Metric) {
	src := stateSource.Load()
	if src == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stateListTimeout)
	defer cancel()
	var policies coredogv1.CoreDumpPolicyList
	if err := src.reader.List(ctx, &policies, client.UnsafeDisableDeepCopy); err == nil {
		for i := range policies.Items {
			p := &policies.Items[i]
			ch <- prometheus.MustNewConstMetric(agentsDesiredDesc, prometheus.GaugeValue, float64(p.Status.DesiredAgents), p.Name)
			ch <- prometheus.MustNewConstMetric(agentsReadyDesc, prometheus.GaugeValue, float64(p.Status.ReadyAgents), p.Name)
		}
	}
	var dumps coredogv1.CoreDumpList
	if err := src.reader.List(ctx, &dumps, client.InNamespace(src.namespace), client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	for k, n := range countDumps(dumps.Items) {
		ch <- prometheus.MustNewConstMetric(coreDumpObjectsDesc, prometheus.GaugeValue, float64(n), k[0], k[1], k[2])
	}
	for _, s := range firstSeen(dumps.Items, maxSignatureSeries) {
		ch <- prometheus.MustNewConstMetric(signatureFirstSeenDesc, prometheus.GaugeValue, float64(s.at.UnixNano())/1e9,
			s.key[0], s.key[1], s.key[2], s.key[3])
	}
}

// countDumps counts CoreDumps by policy, phase (Pending before the first
// reconcile) and reason.
func countDumps(dumps []coredogv1.CoreDump) map[[3]string]int {
	out := map[[3]string]int{}
	for i := range dumps {
		cd := &dumps[i]
		phase := cmp.Or(cd.Status.Phase, coredogv1.PhasePending)
		out[[3]string{cd.Spec.PolicyName, string(phase), cd.Status.Reason}]++
	}
	return out
}

type signatureSeen struct {
	key [4]string
	at  time.Time
}

// firstSeen is, for each namespace, workload and signature, the detection
// time of its oldest CoreDump: the newest max of them.
func firstSeen(dumps []coredogv1.CoreDump, limit int) []signatureSeen {
	oldest := map[[4]string]time.Time{}
	for i := range dumps {
		cd := &dumps[i]
		if cd.Spec.Signature == "" {
			continue
		}
		ns, kind, workload := podLabels(cd)
		k := [4]string{ns, kind, workload, cd.Spec.Signature}
		at := cd.Spec.DetectedAt.Time
		if prev, ok := oldest[k]; !ok || at.Before(prev) {
			oldest[k] = at
		}
	}
	out := make([]signatureSeen, 0, len(oldest))
	for k, at := range oldest {
		out = append(out, signatureSeen{key: k, at: at})
	}
	slices.SortFunc(out, func(a, b signatureSeen) int {
		return cmp.Or(b.at.Compare(a.at), slices.Compare(a.key[:], b.key[:]))
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}
