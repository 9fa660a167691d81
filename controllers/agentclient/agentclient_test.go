package agentclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/wire"
)

// testNode is the node whose dumps these tests fetch.
const testNode = "node-a"

type fixture struct {
	ca     *pki.CA
	client *Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := NewCredentials("p", ca, now)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &fixture{ca: ca, client: c}
}

// agentCert is a serving certificate of policy "p" for an agent on node, as
// the manager issues it: for a key the agent made, from its request.
func (f *fixture) agentCert(t *testing.T, node string) tls.Certificate {
	t.Helper()
	key, csr, err := pki.NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := f.ca.SignAgentCSR(csr, "p", node, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := pki.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
}

// TestFetchTalksOnlyToTheDumpsNode is the attack of root on one node, which
// holds its own agent's key and certificate (or, before agents had their
// own, the policy's shared serving key), and answers the manager's download
// of another node's dump: by DNS spoofing, by taking over that node's pod
// IP, or through a Lease that points there. The handshake must fail before
// any request is sent, with the same words as any unreachable agent.
func TestFetchTalksOnlyToTheDumpsNode(t *testing.T) {
	f := newFixture(t)
	other := newFixture(t)
	now := time.Now()
	shared, err := f.ca.IssueServer([]string{pki.AgentServerName("p")}, now)
	if err != nil {
		t.Fatal(err)
	}
	sharedCert, err := tls.X509KeyPair(shared.CertPEM, shared.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	otherPolicy := func() tls.Certificate {
		key, csr, _ := pki.NewAgentKey()
		certPEM, err := f.ca.SignAgentCSR(csr, "q", testNode, now)
		if err != nil {
			t.Fatal(err)
		}
		leaf, _ := pki.ParseCertificate(certPEM)
		return tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	}()
	cases := []struct {
		name string
		cert tls.Certificate
	}{
		{"another node's agent", f.agentCert(t, "node-b")},
		{"a node whose name extends the dump's", f.agentCert(t, testNode+".evil")},
		{"the dump's node, another policy", otherPolicy},
		{"the dump's node, another CA", other.agentCert(t, testNode)},
		{"the policy's former shared serving certificate", sharedCert},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				w.Header().Set(wire.CompressionHeader, "zstd")
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{tc.cert}}
			srv.StartTLS()
			defer srv.Close()
			_, err := f.client.Fetch(context.Background(), srv.URL, testNode, "core-1", coredogv1.CompressionZstd, 1)
			if !errors.Is(err, ErrUnreachable) {
				t.Fatalf("err = %v, want ErrUnreachable", err)
			}
			if strings.Contains(err.Error(), srv.Listener.Addr().String()) || strings.Contains(err.Error(), "certificate") {
				t.Errorf("the error says more than that: %v", err)
			}
			if n := requests.Load(); n != 0 {
				t.Fatalf("%d requests reached an agent that is not the dump's node's", n)
			}
		})
	}
	// The same server with the dump's node's certificate is answered.
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(wire.CompressionHeader, "zstd")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{f.agentCert(t, testNode)}}
	srv.StartTLS()
	defer srv.Close()
	s, err := f.client.Fetch(context.Background(), srv.URL, testNode, "core-1", coredogv1.CompressionZstd, 1)
	if err != nil {
		t.Fatalf("the dump's own agent: %v", err)
	}
	s.Close()
}

// TestFetchRejectsLyingAgents: wrong trailers, missing trailers, a stream cut
// short and garbage must never read as a clean end. These agents declare no
// stream trailers, as agents older than their controller, so the client
// decodes to check.
func TestFetchRejectsLyingAgents(t *testing.T) {
	f := newFixture(t)
	raw := []byte(strings.Repeat("core dump bytes ", 1000))
	sum := sha256.Sum256(raw)
	good := hex.EncodeToString(sum[:])
	enc, _ := zstd.NewWriter(nil)
	compressed := enc.EncodeAll(raw, nil)
	cases := []struct {
		name    string
		body    []byte
		size    string
		sha     string
		wantErr string
	}{
		{"honest", compressed, strconv.Itoa(len(raw)), good, ""},
		{"wrong checksum", compressed, strconv.Itoa(len(raw)), strings.Repeat("0", 64), "arrived"},
		{"wrong size", compressed, "5", good, "arrived"},
		{"no trailers", compressed, "", "", "no size or checksum trailer"},
		{"cut short", compressed[:len(compressed)/2], strconv.Itoa(len(raw)), good, "does not decode"},
		{"garbage", []byte("this is not zstd at all"), "23", good, "does not decode"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", wire.RawSizeTrailer+", "+wire.RawSHA256Trailer)
				w.Header().Set(wire.CompressionHeader, "zstd")
				_, _ = w.Write(tc.body)
				if tc.size != "" {
					w.Header().Set(wire.RawSizeTrailer, tc.size)
					w.Header().Set(wire.RawSHA256Trailer, tc.sha)
				}
			}))
			cert := f.agentCert(t, testNode)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.StartTLS()
			defer srv.Close()
			s, err := f.client.Fetch(context.Background(), srv.URL, testNode, "core-1", coredogv1.CompressionZstd, int64(len(raw)))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = io.ReadAll(s)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("honest agent: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want ErrIntegrity containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestFetchChecksStreamTrailers: with stream trailers the client checks the
// bytes that arrived against them without decoding, and takes the raw size
// and SHA-256 from the agent; a stream cut short, altered on the way, sent
// in another encoding, or of a file that changed must never read as a clean
// end.
func TestFetchChecksStreamTrailers(t *testing.T) {
	f := newFixture(t)
	raw := []byte(strings.Repeat("core dump bytes ", 1000))
	rawSum := sha256Hex(raw)
	enc, _ := zstd.NewWriter(nil)
	zst := enc.EncodeAll(raw, nil)
	var gz bytes.Buffer
	gw := gzip.NewWriter(&gz)
	_, _ = gw.Write(raw)
	_ = gw.Close()
	flipped := bytes.Clone(zst)
	flipped[len(flipped)/2] ^= 1
	type trailers struct{ rawSize, rawSHA, size, crc string }
	honest := func(body []byte) trailers {
		return trailers{strconv.Itoa(len(raw)), rawSum, strconv.Itoa(len(body)), crc32cHex(body)}
	}
	cases := []struct {
		name     string
		mode     coredogv1.Compression
		body     []byte
		sent     []byte // what the handler writes, when not body
		trailers trailers
		abort    bool
		expected int64
		wantErr  string // "" is a clean end; "-" any error that is not ErrIntegrity
	}{
		{name: "honest zstd", mode: coredogv1.CompressionZstd, body: zst, trailers: honest(zst)},
		{name: "honest gzip", mode: coredogv1.CompressionGzip, body: gz.Bytes(), trailers: honest(gz.Bytes())},
		{name: "honest none", mode: coredogv1.CompressionNone, body: raw, trailers: honest(raw)},
		{name: "altered on the way", mode: coredogv1.CompressionZstd, body: zst, sent: flipped, trailers: honest(zst), wantErr: "arrived"},
		{name: "cut short, trailers of the whole", mode: coredogv1.CompressionZstd, body: zst, sent: zst[:len(zst)/2], trailers: honest(zst), wantErr: "arrived"},
		{name: "cut short, connection broken", mode: coredogv1.CompressionZstd, body: zst, sent: zst[:len(zst)/2], abort: true, wantErr: "-"},
		{name: "no trailers sent", mode: coredogv1.CompressionZstd, body: zst, wantErr: "no size or checksum trailer"},
		{name: "no stream size", mode: coredogv1.CompressionZstd, body: zst, trailers: trailers{strconv.Itoa(len(raw)), rawSum, "", crc32cHex(zst)}, wantErr: "no size or checksum trailer"},
		{name: "raw size differs from the CoreDump", mode: coredogv1.CompressionZstd, body: zst, trailers: honest(zst), expected: int64(len(raw)) + 1, wantErr: "changed after capture"},
		{name: "malformed raw checksum", mode: coredogv1.CompressionZstd, body: zst, trailers: trailers{strconv.Itoa(len(raw)), "XYZ", strconv.Itoa(len(zst)), crc32cHex(zst)}, wantErr: "malformed"},
		{name: "negative raw size", mode: coredogv1.CompressionZstd, body: zst, trailers: trailers{"-1", rawSum, strconv.Itoa(len(zst)), crc32cHex(zst)}, expected: -1, wantErr: "malformed"},
		{name: "garbage", mode: coredogv1.CompressionZstd, body: []byte("this is not zstd at all"), trailers: honest([]byte("this is not zstd at all")), wantErr: "not a zstd stream"},
		{name: "gzip sent as zstd", mode: coredogv1.CompressionZstd, body: gz.Bytes(), trailers: honest(gz.Bytes()), wantErr: "not a zstd stream"},
		{name: "unencoded body not the raw file", mode: coredogv1.CompressionNone, body: raw[1:], trailers: honest(raw[1:]), wantErr: "not a none stream"},
		// The stream's own CRC and size hold, but its SHA-256 is not the
		// one the agent read from the file.
		{name: "unencoded body of another checksum", mode: coredogv1.CompressionNone, body: raw,
			trailers: trailers{strconv.Itoa(len(raw)), sha256Hex(append(bytes.Clone(raw[1:]), 'x')), strconv.Itoa(len(raw)), crc32cHex(raw)}, wantErr: "not a none stream"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Trailer", strings.Join([]string{wire.RawSizeTrailer, wire.RawSHA256Trailer, wire.StreamSizeTrailer, wire.StreamCRC32CTrailer}, ", "))
				w.Header().Set(wire.CompressionHeader, r.URL.Query().Get(wire.CompressionParam))
				body := tc.body
				if tc.sent != nil {
					body = tc.sent
				}
				_, _ = w.Write(body)
				if tc.abort {
					w.(http.Flusher).Flush()
					panic(http.ErrAbortHandler)
				}
				for k, v := range map[string]string{wire.RawSizeTrailer: tc.trailers.rawSize, wire.RawSHA256Trailer: tc.trailers.rawSHA,
					wire.StreamSizeTrailer: tc.trailers.size, wire.StreamCRC32CTrailer: tc.trailers.crc} {
					if v != "" {
						w.Header().Set(k, v)
					}
				}
			}))
			srv.Config.ErrorLog = log.New(io.Discard, "", 0)
			cert := f.agentCert(t, testNode)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.StartTLS()
			defer srv.Close()
			expected := int64(len(raw))
			if tc.expected != 0 {
				expected = tc.expected
			}
			s, err := f.client.Fetch(context.Background(), srv.URL, testNode, "core-1", tc.mode, expected)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			got, err := io.ReadAll(s)
			switch tc.wantErr {
			case "":
				if err != nil {
					t.Fatalf("honest agent: %v", err)
				}
				if !bytes.Equal(got, tc.body) || s.RawSize != int64(len(raw)) || s.SHA256 != rawSum {
					t.Fatalf("got %d bytes, raw %d bytes sha256 %s", len(got), s.RawSize, s.SHA256)
				}
			case "-":
				if err == nil || errors.Is(err, ErrIntegrity) {
					t.Fatalf("err = %v, want a transport error", err)
				}
			default:
				if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want ErrIntegrity containing %q", err, tc.wantErr)
				}
			}
			if err != nil && (s.RawSize != 0 || s.SHA256 != "") {
				t.Fatalf("a failed stream reports raw %d bytes sha256 %q", s.RawSize, s.SHA256)
			}
		})
	}
}

func crc32cHex(b []byte) string {
	h := wire.NewStreamChecksum()
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestFetchFollowsNoRedirectAndQuotesNoBody is the attack of an agent that
// holds its policy's serving key: it answers a download with a redirect to
// another agent of the same policy (whose dump it wants stored under its own
// CoreDump) and puts text of its choosing in the body. The client must not
// dial the target, and the error must carry neither the body nor the reason
// phrase.
func TestFetchFollowsNoRedirectAndQuotesNoBody(t *testing.T) {
	f := newFixture(t)
	cert := f.agentCert(t, testNode)
	startTLS := func(h http.HandlerFunc) *httptest.Server {
		srv := httptest.NewUnstartedServer(h)
		srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	victimDialled := make(chan struct{}, 16)
	victim := startTLS(func(w http.ResponseWriter, r *http.Request) {
		victimDialled <- struct{}{}
		w.Header().Set(wire.CompressionHeader, "zstd")
	})
	const planted = "token=s3cr3t <script>"
	for _, status := range []int{http.StatusFound, http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect, http.StatusInternalServerError, http.StatusTeapot} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			forger := startTLS(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Location", victim.URL+r.URL.RequestURI())
				w.WriteHeader(status)
				_, _ = io.WriteString(w, planted)
			})
			s, err := f.client.Fetch(context.Background(), forger.URL, testNode, "core-1", coredogv1.CompressionZstd, 10)
			if err == nil {
				s.Close()
				t.Fatal("a redirect or error status was taken as a dump")
			}
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("err = %v, want ErrRefused", err)
			}
			if msg := err.Error(); strings.Contains(msg, "s3cr3t") || strings.Contains(msg, "<script>") || strings.Contains(msg, victim.Listener.Addr().String()) || strings.Contains(msg, http.StatusText(status)) {
				t.Fatalf("the error quotes the agent's answer: %q", msg)
			}
			select {
			case <-victimDialled:
				t.Fatal("the client followed the redirect to another agent")
			default:
			}
		})
	}
}

// TestFetchErrorsDoNotScanPorts is the attack of an agent that points its
// Lease's endpoint at other addresses to learn, from the CoreDump's status,
// which ports are open: a closed port, a port that accepts and hangs up, a
// port that speaks plain HTTP, and a TLS server with another certificate
// must all give the same error, naming no address, port or cause.
func TestFetchErrorsDoNotScanPorts(t *testing.T) {
	f := newFixture(t)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hangup.Close() })
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	plain := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(plain.Close)
	otherTLS := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(otherTLS.Close)

	var first string
	for _, addr := range []string{closedAddr, hangup.Addr().String(), plain.Listener.Addr().String(), otherTLS.Listener.Addr().String()} {
		_, err := f.client.Fetch(context.Background(), "https://"+addr, testNode, "core-1", coredogv1.CompressionZstd, 1)
		if !errors.Is(err, ErrUnreachable) {
			t.Fatalf("%s: err = %v, want ErrUnreachable", addr, err)
		}
		msg := err.Error()
		_, port, _ := net.SplitHostPort(addr)
		for _, leak := range []string{port, "127.0.0.1", "refused", "reset", "EOF", "certificate", "tls", "HTTP"} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: the error says %q: %s", addr, leak, msg)
			}
		}
		if first == "" {
			first = msg
		} else if msg != first {
			t.Errorf("errors tell endpoints apart: %q and %q", first, msg)
		}
	}
}

// TestFetchTakesTheCommandLineAsHostileInput: the command line an agent
// sends is bounded, must be well encoded and one header, and reaches the
// caller with control characters and invalid UTF-8 escaped.
func TestFetchTakesTheCommandLineAsHostileInput(t *testing.T) {
	f := newFixture(t)
	cert := f.agentCert(t, testNode)
	for _, tc := range []struct {
		name   string
		values []string
		want   string
	}{
		{"none", nil, ""},
		{"as the agent encodes it", []string{wire.EncodeCommandLine("/app/server --token=s3cr3t")}, "/app/server --token=s3cr3t"},
		{"terminal escapes and invalid UTF-8", []string{wire.EncodeCommandLine("x\x1b]52;c;AAAA\x07 \xff")}, `x\x1b]52;c;AAAA\x07 \xff`},
		{"raw bytes, not encoded", []string{"%zz"}, ""},
		{"over the bound", []string{strings.Repeat("a", wire.MaxCommandLine+1)}, ""},
		{"huge", []string{strings.Repeat("%41", 3000)}, ""},
		{"twice", []string{"a", "b"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set(wire.CompressionHeader, "zstd")
				for _, v := range tc.values {
					w.Header().Add(wire.CommandLineHeader, v)
				}
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.StartTLS()
			defer srv.Close()
			s, err := f.client.Fetch(context.Background(), srv.URL, testNode, "core-1", coredogv1.CompressionZstd, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.CommandLine != tc.want {
				t.Fatalf("CommandLine = %q, want %q", s.CommandLine, tc.want)
			}
		})
	}
}
