package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/coredog/coredog/internal/wire"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coredog/coredog/internal/pki"
)

const (
	defaultMaxParallel = 4
	// bufSize is the read size: large enough that syscalls and per-write
	// deadline refreshes are negligible, small enough to multiply by MaxParallel.
	bufSize = 1 << 20
	// writeTimeout bounds each write, not the download: a dump takes as long as
	// it takes, but a reader that stops reading must not hold the file (and its
	// disk space, if deleted meanwhile) forever.
	writeTimeout = 60 * time.Second
	// retryAfter is what a refused client is told to wait; downloads take
	// minutes, so retrying sooner only adds load.
	retryAfter = "15"
)

// notFoundBody is the one answer for every "not here": unknown name, bad name,
// replaced, deleted, linked or special file. The endpoint must not be an
// oracle for what exists on the node.
const notFoundBody = "core dump not found\n"

// Options configure the handler and the server.
type Options struct {
	// Registry holds what may be served. Nil serves nothing.
	Registry *Registry
	// Logger receives request logs; never dump contents.
	Logger logr.Logger
	// MaxParallel is the number of concurrent downloads; more get 503 with
	// Retry-After. Default 4.
	MaxParallel int
	// TLSDir holds ca.crt (a mounted Secret), which verifies the
	// controller. The file is checked on every TLS handshake and reloaded
	// when it changes, so rotation needs no restart. Used by NewServer only.
	TLSDir string
	// Identity is the agent's serving key and certificate. Used by
	// NewServer only.
	Identity *Identity
	// ClientCommonName is the common name required of client certificates.
	// Default pki.ControllerCommonName.
	ClientCommonName string
	// Modules opens collected module files by build-id (modstore.Store);
	// nil serves none.
	Modules ModuleOpener
	// Metrics, when set, receives coredog_agent_served_bytes_total and
	// coredog_agent_serve_requests_total{code}.
	Metrics prometheus.Registerer

	// writeTimeout overrides the per-write deadline, for tests.
	writeTimeout time.Duration
	// readHeaderTimeout overrides how long a client may take to send its
	// request headers (and before them the TLS handshake), for tests.
	readHeaderTimeout time.Duration
}

func (o Options) withDefaults() Options {
	if o.Registry == nil {
		o.Registry = NewRegistry()
	}
	if o.MaxParallel <= 0 {
		o.MaxParallel = defaultMaxParallel
	}
	if o.writeTimeout <= 0 {
		o.writeTimeout = writeTimeout
	}
	if o.readHeaderTimeout <= 0 {
		o.readHeaderTimeout = readHeaderTimeout
	}
	if o.ClientCommonName == "" {
		o.ClientCommonName = pki.ControllerCommonName
	}
	return o
}

// ModuleOpener opens the file collected for a build-id.
type ModuleOpener interface {
	Open(buildID string) (*os.File, error)
}

type handler struct {
	reg      *Registry
	modules  ModuleOpener
	log      logr.Logger
	clientCN string
	slots    chan struct{}
	metrics  *metrics
	timeout  time.Duration
	// open is openRegistered except in tests that need a failing reader.
	open func(Entry) (source, error)
}

var _ http.Handler = (*handler)(nil)

// newHandler returns the routes without TLS: GET /v1/dumps/{name} and GET
// /healthz. When a request did come over TLS, the client certificate's common
// name is checked again here (403 if wrong); NewServer already refuses such
// handshakes. opts must have its defaults.
func newHandler(opts Options) *handler {
	return &handler{
		reg:      opts.Registry,
		modules:  opts.Modules,
		log:      opts.Logger,
		clientCN: opts.ClientCommonName,
		slots:    make(chan struct{}, opts.MaxParallel),
		metrics:  newMetrics(opts.Metrics, opts.Logger),
		timeout:  opts.writeTimeout,
		open:     openRegistered,
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Routed by hand on the escaped path rather than with ServeMux: the mux
	// unescapes %2F into the name and answers ".." with a redirect, and neither
	// should be possible here.
	path := r.URL.EscapedPath()
	if r.ContentLength != 0 {
		refuseBody(w)
		if strings.HasPrefix(path, wire.DumpsPath) {
			h.metrics.request(http.StatusBadRequest)
		}
		return
	}
	switch {
	case path == wire.HealthPath:
		if !allowGet(w, r) {
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	case strings.HasPrefix(path, wire.DumpsPath) && strings.HasSuffix(path, wire.ModulesSuffix):
		if !allowGet(w, r) {
			h.metrics.request(http.StatusMethodNotAllowed)
			return
		}
		h.metrics.request(h.serveModules(w, r, strings.TrimSuffix(strings.TrimPrefix(path, wire.DumpsPath), wire.ModulesSuffix)))
	case strings.HasPrefix(path, wire.DumpsPath):
		if !allowGet(w, r) {
			h.metrics.request(http.StatusMethodNotAllowed)
			return
		}
		rest := strings.TrimPrefix(path, wire.DumpsPath)
		if name, ok := strings.CutSuffix(rest, wire.AnalysisSuffix); ok {
			h.metrics.request(h.serveAnalysis(w, r, name))
			return
		}
		h.metrics.request(h.serveDump(w, r, rest))
	case strings.HasPrefix(path, wire.BuildIDPath):
		if !allowGet(w, r) {
			h.metrics.request(http.StatusMethodNotAllowed)
			return
		}
		h.metrics.request(h.serveBuildID(w, r, strings.TrimPrefix(path, wire.BuildIDPath)))
	default:
		notFound(w)
	}
}

// refuseBody answers a request that announces a body (none of the routes
// takes one) and closes the connection without reading the body: net/http
// would otherwise wait for it, with no deadline, before sending the response
// or reusing the connection, and a client that never sends it would hold the
// connection (and, for a download, the open core file and a slot) forever.
func refuseBody(w http.ResponseWriter) {
	// Fails only on a writer without deadlines (a test recorder), which has
	// no connection to hold.
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	w.Header().Set("Connection", "close")
	http.Error(w, "requests have no body", http.StatusBadRequest)
}

func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	return false
}

func notFound(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusNotFound)
	_, _ = w.Write([]byte(notFoundBody))
}

// serveAnalysis answers GET /v1/dumps/{name}/analysis with the analysis
// computed at capture: the registered entry's, as it was registered, from
// memory, and only to the controller.
func (h *handler) serveAnalysis(w http.ResponseWriter, r *http.Request, name string) int {
	if r.TLS != nil && !peerIs(r.TLS.PeerCertificates, h.clientCN) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return http.StatusForbidden
	}
	entry, ok := h.reg.Get(name)
	if !wire.ValidName(name) || !ok || len(entry.Analysis) == 0 || len(entry.Analysis) > wire.MaxAnalysisBytes {
		notFound(w)
		return http.StatusNotFound
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(entry.Analysis)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(entry.Analysis)
	return http.StatusOK
}

// serveDump answers one download and returns the status it sent, for
// metrics; a download that fails mid-stream panics with http.ErrAbortHandler.
func (h *handler) serveDump(w http.ResponseWriter, r *http.Request, name string) int {
	if r.TLS != nil && !peerIs(r.TLS.PeerCertificates, h.clientCN) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return http.StatusForbidden
	}
	if !wire.ValidName(name) {
		h.log.V(1).Info("Not serving core dump", "reason", "invalid name", "nameBytes", len(name))
		notFound(w)
		return http.StatusNotFound
	}
	comp, ok := wire.ParseCompression(r.URL.Query().Get(wire.CompressionParam))
	if !ok {
		http.Error(w, "compression must be zstd, gzip or none", http.StatusBadRequest)
		return http.StatusBadRequest
	}

	// The slot is taken before looking the name up so that a 503 says nothing
	// about whether the name exists.
	if !h.takeSlot(w) {
		return http.StatusServiceUnavailable
	}
	defer h.releaseSlot()

	entry, ok := h.reg.Get(name)
	if !ok {
		h.log.V(1).Info("Not serving core dump", "name", name, "reason", "not registered")
		notFound(w)
		return http.StatusNotFound
	}
	src, err := h.open(entry)
	if err != nil {
		h.log.V(1).Info("Not serving core dump", "name", name, "path", entry.Path, "err", err.Error())
		notFound(w)
		return http.StatusNotFound
	}
	defer src.Close()

	// Created before the status is sent, so that a failure can still say 500.
	out := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: h.timeout, served: h.metrics.servedBytes, sum: wire.NewStreamChecksum()}
	// An encoder's output is sent from a goroutine of its own, so that
	// encoding goes on while the last chunk is encrypted and written.
	// Unencoded bytes are written as they are: the sink's goroutine already
	// does nothing else.
	var body io.Writer = out
	var snd *sender
	if comp != wire.CompressionNone {
		snd = newSender(r.Context(), out)
		body = snd
	}
	enc, err := newEncoder(comp, body)
	if err != nil {
		if snd != nil {
			_ = snd.Close()
		}
		h.log.Error(err, "Cannot serve core dump", "name", name)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return http.StatusInternalServerError
	}

	start := time.Now()
	if entry.CommandLine != "" {
		w.Header().Set(wire.CommandLineHeader, wire.EncodeCommandLine(entry.CommandLine))
	}
	res, err := h.stream(w, r, comp, src, enc, snd, out)
	log := h.log.WithValues("name", name, "compression", comp, "rawBytes", res.raw, "sentBytes", res.sent, "duration", time.Since(start))
	switch {
	case errors.Is(err, errRead):
		log.Error(err, "Aborting core dump download")
	case err != nil:
		log.V(1).Info("Client stopped reading core dump", "err", err.Error())
	default:
		if res.raw != entry.Size {
			log.Info("Served core dump of a different size than registered", "registeredBytes", entry.Size)
		} else {
			log.Info("Served core dump")
		}
		return http.StatusOK
	}
	// A clean end would let the client believe a truncated stream with
	// wrong trailers; aborting breaks the connection instead. The deferred
	// Close still runs.
	h.metrics.aborted()
	panic(http.ErrAbortHandler)
}

// result is what a stream got through before it ended.
type result struct {
	raw, sent int64
}

// stream sends src through enc, then snd when there is one, to out (which
// writes to w) and sets the trailers. It closes snd. On error the response
// is unusable and must be aborted.
func (h *handler) stream(w http.ResponseWriter, r *http.Request, comp wire.Compression, src source, enc io.WriteCloser, snd *sender, out *deadlineWriter) (result, error) {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set(wire.CompressionHeader, string(comp))
	hdr.Set("Trailer", wire.Trailers)
	w.WriteHeader(http.StatusOK)

	sum := sha256.New()
	s := newSink(r.Context(), sum, enc)
	err := copyFile(src, s)
	if cerr := s.close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = enc.Close()
	}
	if snd != nil {
		if cerr := snd.Close(); err == nil {
			err = cerr
		}
	}
	res := result{raw: s.n, sent: out.n}
	if err != nil {
		return res, err
	}
	hdr.Set(wire.RawSizeTrailer, strconv.FormatInt(s.n, 10))
	hdr.Set(wire.RawSHA256Trailer, hex.EncodeToString(sum.Sum(nil)))
	hdr.Set(wire.StreamSizeTrailer, strconv.FormatInt(out.n, 10))
	hdr.Set(wire.StreamCRC32CTrailer, hex.EncodeToString(out.sum.Sum(nil)))
	// The last chunk and the trailers are written after the handler returns,
	// so give them a deadline too.
	out.refresh()
	return res, nil
}

// takeSlot takes one of the parallel downloads, or answers 503 with
// Retry-After when all are taken. A taken slot is given back with
// releaseSlot.
func (h *handler) takeSlot(w http.ResponseWriter) bool {
	select {
	case h.slots <- struct{}{}:
		return true
	default:
		w.Header().Set("Retry-After", retryAfter)
		http.Error(w, "too many downloads", http.StatusServiceUnavailable)
		return false
	}
}

func (h *handler) releaseSlot() { <-h.slots }
