package serve

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/wire"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/test/procio"
)

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	metricsReg := prometheus.NewRegistry()
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, Metrics: metricsReg})
	client := env.httpClient(t, env.client)

	// Not a multiple of the read buffer, with a hole in the middle.
	content := coreLike(t, 3*bufSize+12345, 1)
	clear(content[bufSize : 2*bufSize])
	core := filepath.Join(dir, "core.sparse")
	f, err := os.Create(core)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(content[:bufSize]); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(content[2*bufSize:], 2*bufSize); err != nil {
		t.Fatal(err)
	}
	f.Close()
	reg.Add(entryFor(t, "core-1", core))

	empty := filepath.Join(dir, "core.empty")
	writeFile(t, empty, nil)
	reg.Add(entryFor(t, "core-empty", empty))

	// Registered bigger than it is: served anyway, the trailer tells the truth.
	small := filepath.Join(dir, "core.small")
	writeFile(t, small, content[:1000])
	e := entryFor(t, "core-small", small)
	e.Size = 5000
	reg.Add(e)

	cases := []struct {
		name    string
		dump    string
		query   string
		want    []byte
		wantEnc wire.Compression
	}{
		{"default is zstd", "core-1", "", content, wire.CompressionZstd},
		{"zstd", "core-1", "?compression=zstd", content, wire.CompressionZstd},
		{"gzip", "core-1", "?compression=gzip", content, wire.CompressionGzip},
		{"none", "core-1", "?compression=none", content, wire.CompressionNone},
		{"empty file zstd", "core-empty", "", nil, wire.CompressionZstd},
		{"empty file gzip", "core-empty", "?compression=gzip", nil, wire.CompressionGzip},
		{"size differs from registration", "core-small", "?compression=none", content[:1000], wire.CompressionNone},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := client.Get(base + wire.DumpsPath + tc.dump + tc.query)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status %d", resp.StatusCode)
			}
			for k, want := range map[string]string{
				"Content-Type":         "application/octet-stream",
				"Content-Encoding":     "",
				wire.CompressionHeader: string(tc.wantEnc),
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
			if resp.ContentLength != -1 {
				t.Errorf("ContentLength = %d, want unknown (streamed)", resp.ContentLength)
			}
			if _, ok := resp.Trailer[wire.RawSizeTrailer]; !ok {
				t.Errorf("trailer %s not declared up front (Trailer: %v)", wire.RawSizeTrailer, resp.Trailer)
			}
			sent, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(decoder(t, tc.wantEnc, bytes.NewReader(sent)))
			if err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if !bytes.Equal(got, tc.want) {
				t.Fatalf("decoded %d bytes, want %d, or contents differ", len(got), len(tc.want))
			}
			crc := wire.NewStreamChecksum()
			crc.Write(sent)
			if got, want := resp.Trailer.Get(wire.StreamSizeTrailer), strconv.Itoa(len(sent)); got != want {
				t.Errorf("stream size trailer %q, want %q", got, want)
			}
			if got, want := resp.Trailer.Get(wire.StreamCRC32CTrailer), hex.EncodeToString(crc.Sum(nil)); got != want {
				t.Errorf("stream crc32c trailer %q, want %q", got, want)
			}
			if got, want := resp.Trailer.Get(wire.RawSizeTrailer), strconv.Itoa(len(tc.want)); got != want {
				t.Errorf("size trailer %q, want %q", got, want)
			}
			if got, want := resp.Trailer.Get(wire.RawSHA256Trailer), sha256Hex(tc.want); got != want {
				t.Errorf("sha256 trailer %q, want %q", got, want)
			}
		})
	}

	if got := counterValue(t, mustCounterVec(t, metricsReg).WithLabelValues("200")); got != float64(len(cases)) {
		t.Errorf("requests{code=200} = %v, want %d", got, len(cases))
	}
}

// mustCounterVec finds the request counter the server registered, proving it did.
func mustCounterVec(t *testing.T, reg *prometheus.Registry) *prometheus.CounterVec {
	t.Helper()
	m := newMetrics(reg, testLogger(t))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	if !slices.Contains(names, "coredog_agent_served_bytes_total") {
		t.Fatalf("served bytes metric not registered: %v", names)
	}
	return m.requests
}

func TestClientAuthentication(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	other := writeTLSDir(t, t.TempDir())
	base := startServer(t, Options{TLSDir: env.dir, Identity: env.id})
	now := time.Now()
	wrongCN, err := env.ca.IssueClient("someone-else", now)
	if err != nil {
		t.Fatal(err)
	}
	serverAsClient, err := env.ca.IssueServer([]string{pki.AgentServerName(testPolicy)}, now)
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name   string
		client *pki.KeyPair
		ok     bool
	}{
		{"controller certificate", env.client, true},
		{"no client certificate", nil, false},
		{"controller name from another CA", other.client, false},
		{"right CA, another common name", wrongCN, false},
		{"right CA, server certificate", serverAsClient, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp, _, err := get(t, env.httpClient(t, tc.client), base+wire.HealthPath)
			if tc.ok {
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Fatalf("got %v, %v; want 200", resp, err)
				}
				return
			}
			if err == nil && resp.StatusCode != http.StatusForbidden {
				t.Fatalf("status %d, want a failed handshake or 403", resp.StatusCode)
			}
			t.Logf("rejected: %v", err)
		})
	}
}

func TestNotFound(t *testing.T) {
	dir := t.TempDir()
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id})
	client := env.httpClient(t, env.client)

	register := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, data)
		reg.Add(entryFor(t, name, p))
		return p
	}

	// Replaced: another file renamed over the registered one.
	replaced := register("replaced", []byte("original"))
	writeFile(t, replaced+".new", []byte("impostor"))
	if err := os.Rename(replaced+".new", replaced); err != nil {
		t.Fatal(err)
	}
	// Swapped: the registered file removed and a symlink put in its place.
	swapped := register("swapped", []byte("original"))
	if err := os.Remove(swapped); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", swapped); err != nil {
		t.Fatal(err)
	}
	// A link registered with its target's identity: only O_NOFOLLOW refuses it.
	link := filepath.Join(dir, "link")
	if err := os.Symlink("/etc/passwd", link); err != nil {
		t.Fatal(err)
	}
	e := entryFor(t, "link", "/etc/passwd")
	e.Path = link
	reg.Add(e)
	// A FIFO with no writer, registered with its own identity.
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	reg.Add(entryFor(t, "fifo", fifo))
	// A directory.
	sub := filepath.Join(dir, "directory")
	if err := os.Mkdir(sub, 0o700); err != nil {
		t.Fatal(err)
	}
	reg.Add(entryFor(t, "directory", sub))
	// Deleted after registration.
	if err := os.Remove(register("deleted", []byte("gone"))); err != nil {
		t.Fatal(err)
	}
	// Registered, then removed from the registry.
	register("forgotten", []byte("x"))
	reg.Remove("forgotten")
	// Registered under names the URL cannot reach.
	reg.Add(Entry{Name: "a/b", Path: register("slashed", []byte("x"))})

	cases := []struct{ name, path string }{
		{"unregistered", "nope"},
		{"empty name", ""},
		{"dot dot", "../etc/passwd"},
		{"dot dot escaped", "..%2F..%2Fetc%2Fpasswd"},
		{"escaped slash", "a%2Fb"},
		{"escaped dots", "%2e%2e"},
		{"NUL", "replaced%00"},
		{"upper case", "REPLACED"},
		{"too long", strings.Repeat("a", 254)},
		{"replaced by rename", "replaced"},
		{"symlink swapped in", "swapped"},
		{"symlink registered with its target's inode", "link"},
		{"FIFO", "fifo"},
		{"directory", "directory"},
		{"deleted", "deleted"},
		{"removed from registry", "forgotten"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A hanging open would show as this deadline, not a stuck test.
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+wire.DumpsPath+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusNotFound || string(body) != notFoundBody {
				t.Fatalf("got %d %q, want 404 %q", resp.StatusCode, body, notFoundBody)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	reg := NewRegistry()
	p := filepath.Join(t.TempDir(), "core")
	writeFile(t, p, []byte("data"))
	reg.Add(entryFor(t, "core-1", p))
	h := NewHandler(Options{Registry: reg, Logger: testLogger(t)})

	cases := []struct {
		name, method, target string
		want                 int
	}{
		{"unknown compression", http.MethodGet, "/v1/dumps/core-1?compression=brotli", http.StatusBadRequest},
		{"POST", http.MethodPost, "/v1/dumps/core-1", http.StatusMethodNotAllowed},
		{"unknown route", http.MethodGet, "/v1/dumps", http.StatusNotFound},
		{"health", http.MethodGet, "/healthz", http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := newRecorder(true)
			req, err := http.NewRequest(tc.method, tc.target, nil)
			if err != nil {
				t.Fatal(err)
			}
			h.ServeHTTP(w, req)
			if w.status != tc.want {
				t.Fatalf("status %d, want %d", w.status, tc.want)
			}
		})
	}
}

func TestSparseFile(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id})
	client := env.httpClient(t, env.client)

	// 256 MiB: enough that reading the holes would show in the read count,
	// small enough to stream within the client's timeout under -race on a
	// loaded machine.
	const size = 256 << 20
	type region struct {
		off  int64
		data []byte
	}
	regions := []region{
		{0, coreLike(t, 64<<10, 2)},
		{100 << 20, coreLike(t, 1<<20, 3)},
		{size - 4096, coreLike(t, 4096, 4)},
	}
	p := filepath.Join(t.TempDir(), "core.sparse")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for _, r := range regions {
		if _, err := f.WriteAt(r.data, r.off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	reg.Add(entryFor(t, "sparse", p))

	var want []io.Reader
	var at int64
	for _, r := range regions {
		want = append(want, io.LimitReader(zeroReader{}, r.off-at), bytes.NewReader(r.data))
		at = r.off + int64(len(r.data))
	}

	readBefore := procio.MustReadChars(t)
	resp, err := client.Get(base + wire.DumpsPath + "sparse")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sum := sha256.New()
	got := io.TeeReader(decoder(t, wire.CompressionZstd, resp.Body), sum)
	if err := sameStream(got, io.MultiReader(want...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		t.Fatal(err)
	}
	if got := resp.Trailer.Get(wire.RawSizeTrailer); got != strconv.Itoa(size) {
		t.Errorf("size trailer %q, want %d", got, size)
	}
	if got, want := resp.Trailer.Get(wire.RawSHA256Trailer), hex.EncodeToString(sum.Sum(nil)); got != want {
		t.Errorf("sha256 trailer %q, want %q", got, want)
	}
	// The process (server and client) read far less than the file's size:
	// holes were not read.
	if read := procio.MustReadChars(t) - readBefore; read > 32<<20 {
		t.Errorf("read %d bytes to serve a 256 MiB file with 1 MiB of data", read)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// sameStream compares two streams without holding either.
func sameStream(got, want io.Reader) error {
	a, b := make([]byte, 1<<20), make([]byte, 1<<20)
	var off int64
	for {
		n, errA := io.ReadFull(got, a)
		m, errB := io.ReadFull(want, b)
		if n != m || !bytes.Equal(a[:n], b[:m]) {
			return errors.New("streams differ after offset " + strconv.FormatInt(off, 10))
		}
		off += int64(n)
		endA := errA == io.EOF || errors.Is(errA, io.ErrUnexpectedEOF)
		endB := errB == io.EOF || errors.Is(errB, io.ErrUnexpectedEOF)
		if errA != nil && !endA {
			return errA
		}
		if endA || endB {
			if endA != endB {
				return errors.New("streams end at different offsets")
			}
			return nil
		}
	}
}

func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	first := writeTLSDir(t, dir)
	base := startServer(t, Options{TLSDir: dir, Identity: first.id})

	if resp, _, err := get(t, first.httpClient(t, first.client), base+wire.HealthPath); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("before rotation: %v %v", resp, err)
	}

	// A new CA in place, and a certificate from it for the same key, as
	// the manager issues after rotating the CA.
	second := writeTLSDirFor(t, dir, first.id)

	if resp, _, err := get(t, second.httpClient(t, second.client), base+wire.HealthPath); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("new material after rotation: %v %v", resp, err)
	}
	if _, _, err := get(t, first.httpClient(t, first.client), base+wire.HealthPath); err == nil {
		t.Fatal("old material still accepted after rotation")
	}

	// A half-written CA file keeps the last good one.
	writeFile(t, filepath.Join(dir, pki.CACertKey), []byte("-----BEGIN CERTIFICATE-----\n"))
	if resp, _, err := get(t, second.httpClient(t, second.client), base+wire.HealthPath); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("during a broken rewrite: %v %v", resp, err)
	}
}

func TestStalledReaderReleasesFile(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	reg := NewRegistry()
	metricsReg := prometheus.NewRegistry()
	base := startServer(t, Options{Registry: reg, TLSDir: env.dir, Identity: env.id, Metrics: metricsReg, writeTimeout: 200 * time.Millisecond})

	p := randomFile(t, 1, 64<<20)
	reg.Add(entryFor(t, "core-1", p))

	resp, err := env.httpClient(t, env.client).Get(base + wire.DumpsPath + "core-1?compression=none")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Read nothing; the server must give up on its own.
	aborted := mustCounterVec(t, metricsReg).WithLabelValues(statusAborted)
	deadline := time.Now().Add(15 * time.Second)
	for counterValue(t, aborted) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("download to a reader that stopped reading was not aborted")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
