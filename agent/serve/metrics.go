package serve

import (
	"errors"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
)

// statusAborted is the code label of a download that failed after its
// headers were sent; the client saw a broken stream.
const statusAborted = "aborted"

type metrics struct {
	servedBytes prometheus.Counter
	requests    *prometheus.CounterVec
}

// newMetrics always returns usable collectors; they are exported only when
// reg is set. A second handler on the same registry shares the first one's.
func newMetrics(reg prometheus.Registerer, log logr.Logger) *metrics {
	m := &metrics{
		servedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coredog_agent_served_bytes_total",
			Help: "Bytes of core dump downloads sent to clients, after compression.",
		}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coredog_agent_serve_requests_total",
			Help: "Core dump download requests by HTTP status code (\"aborted\": failed mid-stream).",
		}, []string{"code"}),
	}
	if reg == nil {
		return m
	}
	if err := reg.Register(m.servedBytes); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			m.servedBytes = are.ExistingCollector.(prometheus.Counter)
		} else {
			log.Error(err, "Cannot register metric", "metric", "coredog_agent_served_bytes_total")
		}
	}
	if err := reg.Register(m.requests); err != nil {
		if are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); ok {
			m.requests = are.ExistingCollector.(*prometheus.CounterVec)
		} else {
			log.Error(err, "Cannot register metric", "metric", "coredog_agent_serve_requests_total")
		}
	}
	return m
}

func (m *metrics) request(code int) {
	m.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (m *metrics) aborted() {
	m.requests.WithLabelValues(statusAborted).Inc()
}
