package serve

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/wire"

	"github.com/go-logr/logr/testr"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/coredog/coredog/internal/pki"
)

const (
	testPolicy = "p1"
	testNode   = "node-1"
)

// writeCoreLike writes size bytes that look like a core: mostly zero pages,
// some text-like pages (repeated strings, small integers), some random ones.
func writeCoreLike(w io.Writer, size int64, seed uint64) error {
	const page = 4096
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	words := []string{"GLIBC_2.34", "/usr/lib/x86_64-linux-gnu/", "malloc", "pthread_create", "HOME=/root ",
		"{\"level\":\"info\",\"msg\":\"request\"}", "0x00007ffd", "SIGSEGV", "libstdc++.so.6", "main.go:42 "}
	buf := make([]byte, 256*page)
	for size > 0 {
		chunk := buf[:min(int64(len(buf)), size)]
		for p := 0; p < len(chunk); p += page {
			pg := chunk[p:min(p+page, len(chunk))]
			switch r := rng.IntN(100); {
			case r < 60:
				clear(pg)
			case r < 85:
				for i := 0; i < len(pg); {
					i += copy(pg[i:], words[rng.IntN(len(words))])
				}
			default:
				for i := range pg {
					pg[i] = byte(rng.Uint32())
				}
			}
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		size -= int64(len(chunk))
	}
	return nil
}

func coreLike(t testing.TB, size int64, seed uint64) []byte {
	var b bytes.Buffer
	if err := writeCoreLike(&b, size, seed); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// entryFor registers what is at path now (not following links).
func entryFor(t testing.TB, name, path string) Entry {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return Entry{Name: name, Path: path, Device: uint64(st.Dev), Inode: st.Ino, Size: fi.Size()} //nolint:unconvert
}

// decoder undoes the stream encoding as the controller would.
func decoder(t testing.TB, c wire.Compression, r io.Reader) io.Reader {
	t.Helper()
	switch c {
	case wire.CompressionZstd:
		d, err := zstd.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(d.Close)
		return d
	case wire.CompressionGzip:
		d, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return r
}

// tlsEnv is one generation of TLS material: a CA whose certificate is in
// dir as in the mounted Secret, the agent's identity with a certificate from
// it (as the manager issues one), and the controller's client certificate.
type tlsEnv struct {
	dir    string
	ca     *pki.CA
	id     *Identity
	client *pki.KeyPair
}

func writeTLSDir(t testing.TB, dir string) tlsEnv {
	t.Helper()
	id, err := NewIdentity(testPolicy, testNode)
	if err != nil {
		t.Fatal(err)
	}
	return writeTLSDirFor(t, dir, id)
}

// writeTLSDirFor makes a new CA, writes its certificate into dir and has
// id accept a certificate from it.
func writeTLSDirFor(t testing.TB, dir string, id *Identity) tlsEnv {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("coredog-"+testPolicy, now)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignAgentCSR(id.CSR(), testPolicy, testNode, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.Accept(certPEM, ca.CertPEM, now); err != nil {
		t.Fatal(err)
	}
	client, err := ca.IssueClient(pki.ControllerCommonName, now)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, pki.CACertKey), ca.CertPEM)
	return tlsEnv{dir: dir, ca: ca, id: id, client: client}
}

// httpClient verifies the agent as the controller does (env's CA, the test
// node's identity) and presents kp (none when nil).
func (env tlsEnv) httpClient(t testing.TB, kp *pki.KeyPair) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(env.ca.CertPEM)
	cfg := pki.AgentClientConfig(roots, tls.Certificate{}, testPolicy, testNode)
	cfg.Certificates = nil
	if kp != nil {
		pair, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// startServer runs NewServer until the test ends and returns its base URL.
func startServer(t testing.TB, opts Options) string {
	t.Helper()
	if opts.Logger.GetSink() == nil {
		opts.Logger = testr.NewWithInterface(t, testr.Options{Verbosity: 1})
	}
	srv, err := NewServer(opts, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return "https://" + srv.Addr()
}

// get fetches path and returns the response with its body read (or the error).
func get(t testing.TB, c *http.Client, url string) (*http.Response, []byte, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

// fdCount is the number of open descriptors of this process.
func fdCount(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("counting descriptors: %v", err)
	}
	return len(ents)
}

// recordingWriter is an http.ResponseWriter without a network: it keeps
// status and headers, counts or keeps the body, and can fail or block writes.
type recordingWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	keep   bool
	n      int64
	// failAfter makes writes fail once this many bytes were written (when > 0).
	failAfter int64
	// block, when set, is received from before the first body write; started
	// is closed just before waiting on it.
	block   chan struct{}
	started chan struct{}
}

func newRecorder(keep bool) *recordingWriter {
	return &recordingWriter{header: make(http.Header), keep: keep}
}

func (w *recordingWriter) Header() http.Header { return w.header }

func (w *recordingWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	if w.block != nil {
		close(w.started)
		<-w.block
		w.block = nil
	}
	if w.failAfter > 0 && w.n+int64(len(p)) > w.failAfter {
		return 0, errors.New("connection reset by test")
	}
	w.n += int64(len(p))
	if w.keep {
		w.body.Write(p)
	}
	return len(p), nil
}

// serveDirect runs h on req and reports whether it aborted the response.
func serveDirect(h http.Handler, w http.ResponseWriter, req *http.Request) (aborted bool) {
	defer func() {
		if r := recover(); r != nil {
			if r != http.ErrAbortHandler { //nolint:errorlint // the sentinel is panicked as is
				panic(r)
			}
			aborted = true
		}
	}()
	h.ServeHTTP(w, req)
	return false
}

func counterValue(t testing.TB, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// randomFile writes size incompressible bytes (larger than the loopback
// socket buffers, a download of it stalls when the client stops reading)
// into a new file and returns its path.
func randomFile(t *testing.T, seed byte, size int64) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "core")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.NewChaCha8([32]byte{seed}), size); err != nil {
		t.Fatal(err)
	}
	return p
}
