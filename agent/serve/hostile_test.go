package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/wire"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/test/procio"
)

// Clients that try to hold the agent's connections, descriptors and download
// slots. Each must be cut off by the server itself; the test's own deadlines
// only turn a server that holds on into a failure instead of a hang.

// hangGuard is how long a test waits for the server to let go before it
// calls that holding on forever.
const hangGuard = 20 * time.Second

// dialTLS opens a raw TLS connection presenting kp (none when nil).
func (env tlsEnv) dialTLS(t *testing.T, addr string, kp *pki.KeyPair) *tls.Conn {
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
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: hangGuard}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitClosedByServer reads from conn until the server closes it, and fails
// the test if that takes longer than hangGuard.
func waitClosedByServer(t *testing.T, conn net.Conn) {
	t.Helper()
	if err := conn.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
		t.Fatal(err)
	}
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still held the connection after %v", hangGuard)
	}
	// EOF (io.Copy returns nil), a reset or a TLS alert: the server let go.
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	p := filepath.Join(t.TempDir(), "core")
	writeFile(t, p, []byte("core"))
	reg.Add(entryFor(t, "core-1", p))
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, readHeaderTimeout: 300 * time.Millisecond})
	addr := strings.TrimPrefix(base, "https://")

	t.Run("connects and never says hello", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", addr, hangGuard)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		waitClosedByServer(t, conn)
	})
	t.Run("trickles the request line and headers", func(t *testing.T) {
		conn := env.dialTLS(t, addr, env.client)
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			// One byte at a time, and never the blank line that ends the headers.
			msg := "GET /v1/dumps/core-1 HTTP/1.1\r\nHost: agent\r\nX-Slow: " + strings.Repeat("a", 1<<20)
			for i := range len(msg) {
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{msg[i]}); err != nil {
					return
				}
			}
		}()
		waitClosedByServer(t, conn)
	})
}

// A download request has no body. A client that announces one and never
// sends it must not keep the connection, and above all not the open core
// file, waiting for it.
func TestRequestBodyIsNotWaitedFor(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	p := filepath.Join(t.TempDir(), "core")
	writeFile(t, p, coreLike(t, 4*bufSize, 9))
	reg.Add(entryFor(t, "core-1", p))
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, MaxParallel: 1})
	addr := strings.TrimPrefix(base, "https://")

	cases := []struct{ name, request string }{
		{"content length, body never sent", "GET /v1/dumps/core-1 HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\n"},
		{"small body half sent", "GET /v1/dumps/core-1 HTTP/1.1\r\nHost: agent\r\nContent-Length: 10\r\n\r\nabc"},
		{"chunked body never ended", "GET /v1/dumps/core-1 HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n"},
		{"unknown name", "GET /v1/dumps/nope HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\n"},
		{"health", "GET /healthz HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := env.dialTLS(t, addr, env.client)
			if _, err := io.WriteString(conn, tc.request); err != nil {
				t.Fatal(err)
			}
			if err := conn.SetReadDeadline(time.Now().Add(hangGuard)); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatalf("no response while the body is outstanding: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest {
				t.Errorf("status %d, want 400 for a request with a body", resp.StatusCode)
			}
			waitClosedByServer(t, conn)
		})
	}

	// With MaxParallel 1, a download now proves that none of the above
	// still holds the slot.
	resp, body, err := get(t, env.httpClient(t, env.client), base+wire.DumpsPath+"core-1?compression=none")
	if err != nil || resp.StatusCode != http.StatusOK || len(body) != 4*bufSize {
		t.Fatalf("download after the hostile requests: %v, %v, %d bytes", resp, err, len(body))
	}
}

func TestHugeSparseFileStreamsHolesAndCanBeCancelled(t *testing.T) {
	const size = 100 << 30
	p := filepath.Join(t.TempDir(), "core.sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	// A header page and one page near the end; the rest is a hole.
	if _, err := f.WriteAt(coreLike(t, 4096, 7), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Skipf("this file system cannot hold a %d-byte sparse file: %v", int64(size), err)
	}
	if _, err := f.WriteAt(coreLike(t, 4096, 8), size-4096); err != nil {
		t.Fatal(err)
	}
	f.Close()

	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	reg.Add(entryFor(t, "core-huge", p))
	metricsReg := prometheus.NewRegistry()
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, Metrics: metricsReg, MaxParallel: 1})
	client := env.httpClient(t, env.client)
	aborted := mustCounterVec(t, metricsReg).WithLabelValues(statusAborted)

	readBefore := procio.MustReadChars(t)
	for _, c := range []wire.Compression{wire.CompressionZstd, wire.CompressionNone} {
		t.Run(string(c), func(t *testing.T) {
			abortedBefore := counterValue(t, aborted)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+wire.DumpsPath+"core-huge?compression="+string(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			// The header page, then zeros from the hole.
			head := make([]byte, 64<<20)
			if _, err := io.ReadFull(decoder(t, c, resp.Body), head); err != nil {
				t.Fatal(err)
			}
			if string(head[:4096]) != string(coreLike(t, 4096, 7)) {
				t.Fatal("the first page is not the file's")
			}
			for i, b := range head[4096:] {
				if b != 0 {
					t.Fatalf("byte %d of the hole is %#x", 4096+i, b)
				}
			}
			// The controller gives up: the download must end on the agent and
			// free the only slot, long before 100 GiB went by.
			cancel()
			deadline := time.Now().Add(hangGuard)
			for counterValue(t, aborted) == abortedBefore {
				if time.Now().After(deadline) {
					t.Fatalf("a cancelled download of a %d-byte file was still running after %v", int64(size), hangGuard)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	// The hole was never read from disk: the file was not read byte by byte.
	if read := procio.MustReadChars(t) - readBefore; read > 256<<20 {
		t.Errorf("read %d bytes to start two downloads of a file with 8 KiB of data", read)
	}
	// The slot came back.
	resp, _, err := get(t, client, base+wire.HealthPath)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("health after the cancelled downloads: %v %v", resp, err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+wire.DumpsPath+"core-huge", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("a new download after the cancelled ones got %d: the slot was not released", resp.StatusCode)
	}
}

// TestParallelDownloadsAreBounded fills every download slot with clients
// that stop reading, over the network: the next request is refused at once
// with 503 and Retry-After, and the slots come back when those clients go.
func TestParallelDownloadsAreBounded(t *testing.T) {
	const maxParallel = 3
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	// A client that does not read holds its download.
	p := randomFile(t, 2, 32<<20)
	reg.Add(entryFor(t, "core-1", p))
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, MaxParallel: maxParallel})

	var holders []*http.Response
	for range maxParallel {
		// One connection each: separate clients.
		resp, err := env.httpClient(t, env.client).Get(base + wire.DumpsPath + "core-1?compression=none")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("download within the limit: %d", resp.StatusCode)
		}
		holders = append(holders, resp)
	}
	for range 5 {
		resp, body, err := get(t, env.httpClient(t, env.client), base+wire.DumpsPath+"core-1")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("download over the limit: %d %q Retry-After %q, want 503 with Retry-After",
				resp.StatusCode, body, resp.Header.Get("Retry-After"))
		}
	}
	for _, resp := range holders {
		resp.Body.Close()
	}
	deadline := time.Now().Add(hangGuard)
	for {
		resp, _, err := get(t, env.httpClient(t, env.client), base+wire.DumpsPath+"core-1?compression=none")
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slots not released %v after their clients went away: %d", hangGuard, resp.StatusCode)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTrickleReaderIsCutOff reads a download a little at a time, never
// stopping but far slower than the per-write deadline allows: the server
// aborts the download instead of holding the file and its slot for as long
// as the client cares to trickle.
func TestTrickleReaderIsCutOff(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	metricsReg := prometheus.NewRegistry()
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, Metrics: metricsReg, MaxParallel: 1, writeTimeout: 300 * time.Millisecond})
	p := randomFile(t, 3, 64<<20)
	reg.Add(entryFor(t, "core-1", p))

	resp, err := env.httpClient(t, env.client).Get(base + wire.DumpsPath + "core-1?compression=none")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	aborted := mustCounterVec(t, metricsReg).WithLabelValues(statusAborted)
	buf := make([]byte, 1024)
	deadline := time.Now().Add(hangGuard)
	var n int64
	for counterValue(t, aborted) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("a client reading 10 KiB/s still held its download after %v (%d bytes read)", hangGuard, n)
		}
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if err != nil {
			break // cut off: the counter follows
		}
		time.Sleep(100 * time.Millisecond)
	}
	for counterValue(t, aborted) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the connection broke but the download was not counted as aborted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n >= 64<<20 {
		t.Fatal("the whole file reached a client that read far too slowly")
	}
}
