package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"syscall"
	"testing"

	"github.com/coredog/coredog/internal/wire"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
)

func testLogger(t *testing.T) logr.Logger {
	return testr.NewWithOptions(t, testr.Options{Verbosity: 1})
}

func newGet(t testing.TB, ctx context.Context, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

func TestNoDescriptorLeak(t *testing.T) {
	dir := t.TempDir()
	reg := NewRegistry()
	// Quiet: 50 requests' worth of V(1) lines say nothing here.
	h := NewHandler(Options{Registry: reg, Logger: logr.Discard()})

	good := filepath.Join(dir, "good")
	writeFile(t, good, coreLike(t, 3*bufSize/2, 5))
	reg.Add(entryFor(t, "good", good))
	replaced := filepath.Join(dir, "replaced")
	writeFile(t, replaced, []byte("a"))
	reg.Add(entryFor(t, "replaced", replaced))
	writeFile(t, replaced+".new", []byte("b"))
	if err := os.Rename(replaced+".new", replaced); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reg.Add(entryFor(t, "fifo", fifo))
	link := filepath.Join(dir, "link")
	if err := os.Symlink(good, link); err != nil {
		t.Fatal(err)
	}
	e := entryFor(t, "link", good)
	e.Path = link
	reg.Add(e)

	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	kinds := []struct {
		name        string
		target      string
		ctx         context.Context
		failAfter   int64
		wantStatus  int
		wantAborted bool
	}{
		{"zstd", "/v1/dumps/good", context.Background(), 0, http.StatusOK, false},
		{"gzip", "/v1/dumps/good?compression=gzip", context.Background(), 0, http.StatusOK, false},
		{"none", "/v1/dumps/good?compression=none", context.Background(), 0, http.StatusOK, false},
		{"replaced", "/v1/dumps/replaced", context.Background(), 0, http.StatusNotFound, false},
		{"fifo", "/v1/dumps/fifo", context.Background(), 0, http.StatusNotFound, false},
		{"symlink", "/v1/dumps/link", context.Background(), 0, http.StatusNotFound, false},
		{"bad compression", "/v1/dumps/good?compression=lz4", context.Background(), 0, http.StatusBadRequest, false},
		{"client went away", "/v1/dumps/good?compression=none", context.Background(), 1000, http.StatusOK, true},
		{"request cancelled", "/v1/dumps/good", cancelled, 0, http.StatusOK, true},
	}
	run := func(i int) {
		k := kinds[i%len(kinds)]
		w := newRecorder(false)
		w.failAfter = k.failAfter
		aborted := serveDirect(h, w, newGet(t, k.ctx, k.target))
		if w.status != k.wantStatus || aborted != k.wantAborted {
			t.Errorf("%s: status %d aborted %v, want %d %v", k.name, w.status, aborted, k.wantStatus, k.wantAborted)
		}
	}
	// Once round first, so that descriptors the runtime keeps (the poller's,
	// used by the FIFO) are already open when we count.
	for i := range kinds {
		run(i)
	}
	// An *os.File that is dropped unclosed is closed by the garbage
	// collector, which would hide the leak; so no collection while counting.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	before := fdCount(t)
	for i := range 50 {
		run(i)
	}
	if after := fdCount(t); after != before {
		t.Fatalf("%d descriptors open before 50 requests, %d after", before, after)
	}
}

func TestMaxParallel(t *testing.T) {
	const maxParallel = 2
	reg := NewRegistry()
	p := filepath.Join(t.TempDir(), "core")
	writeFile(t, p, []byte("some core"))
	reg.Add(entryFor(t, "core-1", p))
	h := NewHandler(Options{Registry: reg, Logger: testLogger(t), MaxParallel: maxParallel})

	release := make(chan struct{})
	var wg sync.WaitGroup
	for range maxParallel {
		w := newRecorder(false)
		w.block, w.started = release, make(chan struct{})
		wg.Go(func() { h.ServeHTTP(w, newGet(t, context.Background(), "/v1/dumps/core-1?compression=none")) })
		<-w.started // holding its slot, blocked writing
	}

	for _, target := range []string{"/v1/dumps/core-1", "/v1/dumps/not-registered"} {
		w := newRecorder(true)
		h.ServeHTTP(w, newGet(t, context.Background(), target))
		if w.status != http.StatusServiceUnavailable || w.header.Get("Retry-After") == "" {
			t.Fatalf("%s with %d downloads running: status %d Retry-After %q, want 503 with Retry-After",
				target, maxParallel, w.status, w.header.Get("Retry-After"))
		}
	}

	close(release)
	wg.Wait()
	w := newRecorder(true)
	h.ServeHTTP(w, newGet(t, context.Background(), "/v1/dumps/core-1?compression=none"))
	if w.status != http.StatusOK || w.body.String() != "some core" {
		t.Fatalf("after the downloads ended: status %d body %q", w.status, w.body.String())
	}
}

// failingSource is a file whose reads fail part way.
type failingSource struct {
	failAt int64
	closed bool
}

func (f *failingSource) ReadAt(p []byte, off int64) (int, error) {
	if off >= f.failAt {
		return 0, syscall.EIO
	}
	n := min(int64(len(p)), f.failAt-off)
	clear(p[:n])
	return int(n), nil
}

func (f *failingSource) Seek(int64, int) (int64, error) { return 0, errors.ErrUnsupported }
func (f *failingSource) Close() error                   { f.closed = true; return nil }

func TestReadErrorAbortsStream(t *testing.T) {
	reg := NewRegistry()
	reg.Add(Entry{Name: "core-1", Path: "/nowhere"})
	metricsReg := prometheus.NewRegistry()
	h := newHandler(Options{Registry: reg, Logger: testLogger(t), Metrics: metricsReg}.withDefaults())
	src := &failingSource{failAt: 3*bufSize + 17}
	h.open = func(Entry) (source, error) { return src, nil }

	for _, c := range []wire.Compression{wire.CompressionZstd, wire.CompressionGzip, wire.CompressionNone} {
		t.Run(string(c), func(t *testing.T) {
			src.closed = false
			w := newRecorder(false)
			if !serveDirect(h, w, newGet(t, context.Background(), "/v1/dumps/core-1?compression="+string(c))) {
				t.Fatal("a failed read ended the response cleanly")
			}
			if w.header.Get(wire.RawSizeTrailer) != "" || w.header.Get(wire.RawSHA256Trailer) != "" {
				t.Error("trailers set on an aborted stream")
			}
			if !src.closed {
				t.Error("file not closed after the abort")
			}
		})
	}
	if got := counterValue(t, h.metrics.requests.WithLabelValues(statusAborted)); got != 3 {
		t.Errorf("requests{code=aborted} = %v, want 3", got)
	}
}

func TestHandlerChecksPeerName(t *testing.T) {
	reg := NewRegistry()
	p := filepath.Join(t.TempDir(), "core")
	writeFile(t, p, []byte("x"))
	reg.Add(entryFor(t, "core-1", p))
	h := NewHandler(Options{Registry: reg, Logger: testLogger(t)})

	cases := []struct {
		name  string
		peers []*x509.Certificate
		want  int
	}{
		{"controller", []*x509.Certificate{{Subject: pkix.Name{CommonName: "coredog-controller"}}}, http.StatusOK},
		{"other name", []*x509.Certificate{{Subject: pkix.Name{CommonName: "mallory"}}}, http.StatusForbidden},
		{"no certificate", nil, http.StatusForbidden},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := newGet(t, context.Background(), "/v1/dumps/core-1")
			req.TLS = &tls.ConnectionState{PeerCertificates: tc.peers}
			w := newRecorder(false)
			h.ServeHTTP(w, req)
			if w.status != tc.want {
				t.Fatalf("status %d, want %d", w.status, tc.want)
			}
		})
	}
}

var _ io.ReaderAt = (*failingSource)(nil)
