package localcluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// backend answers GET /echo with the request's Host and path, PUT /sink
// with the SHA-256 of what it read, and GET /stream with a body that never
// ends until the client goes away.
func backend(t *testing.T, hits *atomic.Int64) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /echo", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, r.Host+" "+r.URL.RequestURI())
	})
	mux.HandleFunc("PUT /sink", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(h.Sum(nil))
	})
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		rc := http.NewResponseController(w)
		for {
			if _, err := w.Write(make([]byte, 1024)); err != nil {
				return
			}
			_ = rc.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(time.Millisecond):
			}
		}
	})
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func startProxy(t *testing.T, target string) *FaultProxy {
	t.Helper()
	p, err := StartFaultProxy(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

func TestFaultProxyPassesThroughWithTheClientsHost(t *testing.T) {
	var hits atomic.Int64
	p := startProxy(t, backend(t, &hits).URL)
	code, body := get(t, p.URL()+"/echo?x=1")
	if code != http.StatusOK || body != p.Addr()+" /echo?x=1" {
		t.Fatalf("got %d %q, want 200 %q", code, body, p.Addr()+" /echo?x=1")
	}
	// The proxy logs a request once its handler returns, which may be just
	// after the client has read the response.
	reqs := p.Requests()
	for deadline := time.Now().Add(5 * time.Second); len(reqs) == 0 && time.Now().Before(deadline); reqs = p.Requests() {
		time.Sleep(10 * time.Millisecond)
	}
	if len(reqs) != 1 || reqs[0] != (ProxiedRequest{Method: "GET", Path: "/echo", RawQuery: "x=1", Status: http.StatusOK}) {
		t.Fatalf("request log %+v", reqs)
	}
}

func TestFaultProxyFailsTheNthMatchingRequest(t *testing.T) {
	var hits atomic.Int64
	p := startProxy(t, backend(t, &hits).URL)
	rule := p.FailNth(func(r *http.Request) bool { return r.URL.Query().Get("part") == "2" }, 2, http.StatusInternalServerError)
	var codes []int
	for _, q := range []string{"part=1", "part=2", "part=2", "part=2", "part=3"} {
		code, body := get(t, p.URL()+"/echo?"+q)
		codes = append(codes, code)
		if code == http.StatusInternalServerError && !strings.Contains(body, "<Code>InternalError</Code>") {
			t.Errorf("injected error body %q is not an S3 error", body)
		}
	}
	want := []int{200, 200, 500, 200, 200}
	for i := range want {
		if codes[i] != want[i] {
			t.Fatalf("statuses %v, want %v", codes, want)
		}
	}
	if rule.Fired() != 1 || rule.Matched() != 3 {
		t.Errorf("rule fired %d times of %d matches, want 1 of 3", rule.Fired(), rule.Matched())
	}
	if hits.Load() != 4 {
		t.Errorf("the server saw %d requests, want 4 (the failed one never reaches it)", hits.Load())
	}
	injected := 0
	for _, r := range p.Requests() {
		if r.Injected {
			injected++
			if r.Status != http.StatusInternalServerError || r.RawQuery != "part=2" {
				t.Errorf("injected entry %+v", r)
			}
		}
	}
	if injected != 1 {
		t.Errorf("%d injected requests logged, want 1", injected)
	}
	p.ClearRules()
	if code, _ := get(t, p.URL()+"/echo?part=2"); code != http.StatusOK {
		t.Errorf("after ClearRules: %d", code)
	}
}

func TestFaultProxyThrottledBodiesArriveWhole(t *testing.T) {
	var hits atomic.Int64
	p := startProxy(t, backend(t, &hits).URL)
	p.Throttle(8 << 20)
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	req, err := http.NewRequest(http.MethodPut, p.URL()+"/sink", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want[:]) {
		t.Fatalf("throttled upload arrived as %d %x, want 200 %x", resp.StatusCode, got, want)
	}
}

func TestLimiterSchedule(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		rate  int64
		steps []struct {
			n    int
			at   time.Duration // when the chunk is asked for, after t0
			want time.Duration // when it may have passed, after t0
		}
	}{
		{"back to back at 1 MiB/s", 1 << 20, []struct {
			n        int
			at, want time.Duration
		}{{1 << 19, 0, 500 * time.Millisecond}, {1 << 19, 0, time.Second}, {1 << 20, 10 * time.Millisecond, 2 * time.Second}}},
		{"idle time saves up no burst", 1000, []struct {
			n        int
			at, want time.Duration
		}{{100, 0, 100 * time.Millisecond}, {100, 5 * time.Second, 5100 * time.Millisecond}, {500, 5 * time.Second, 5600 * time.Millisecond}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := &limiter{}
			l.setRate(tc.rate)
			for i, s := range tc.steps {
				if got := l.reserveLocked(s.n, t0.Add(s.at)); !got.Equal(t0.Add(s.want)) {
					t.Errorf("step %d: %d bytes asked at +%s may pass at +%s, want +%s", i, s.n, s.at, got.Sub(t0), s.want)
				}
			}
		})
	}
	var l limiter
	if c := l.chunk(1 << 20); c != 1<<20 {
		t.Errorf("unthrottled chunk %d, want the whole buffer", c)
	}
	l.setRate(1 << 20)
	if c := l.chunk(1 << 20); c >= 1<<20 || c < 512 {
		t.Errorf("chunk at 1 MiB/s is %d bytes", c)
	}
	if err := l.wait(context.Background(), 0); err != nil {
		t.Error(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.wait(ctx, 1<<30); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled wait returned %v", err)
	}
}

func TestFaultProxyRefusesAndAcceptsAgain(t *testing.T) {
	var hits atomic.Int64
	p := startProxy(t, backend(t, &hits).URL)

	// A download in flight when the proxy starts refusing is cut.
	resp, err := http.Get(p.URL() + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	if err := p.Refuse(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, resp.Body); err == nil {
		t.Error("a download in flight ended cleanly; want it cut")
	}
	_, err = net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dialling a refusing proxy: %v, want connection refused", err)
	}
	if err := p.Refuse(); err != nil {
		t.Errorf("refusing twice: %v", err)
	}

	if err := p.Accept(); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, p.URL()+"/echo"); code != http.StatusOK || !strings.HasSuffix(body, " /echo") {
		t.Fatalf("after Accept: %d %q", code, body)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Accept(); err == nil {
		t.Error("Accept after Close succeeded")
	}
}

func TestMatchS3UploadPart(t *testing.T) {
	cases := []struct {
		method, target string
		want           bool
	}{
		{"PUT", "/b/k?partNumber=2&uploadId=abc", true},
		{"PUT", "/b/k?uploadId=abc&partNumber=2", true},
		{"PUT", "/b/k?partNumber=1&uploadId=abc", false},
		{"PUT", "/b/k?partNumber=20&uploadId=abc", false},
		{"PUT", "/b/k?partNumber=2", false},
		{"GET", "/b/k?partNumber=2&uploadId=abc", false},
		{"PUT", "/b/k", false},
	}
	m := MatchS3UploadPart(2)
	for _, c := range cases {
		if got := m(httptest.NewRequest(c.method, c.target, nil)); got != c.want {
			t.Errorf("%s %s: %v, want %v", c.method, c.target, got, c.want)
		}
	}
}

func TestFaultProxyHangsUntilTheClientGivesUp(t *testing.T) {
	var hits atomic.Int64
	p := startProxy(t, backend(t, &hits).URL)
	rule := p.AddRule(&FaultRule{Match: func(r *http.Request) bool { return r.URL.Path == "/echo" }, Hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.URL()+"/echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	// The request is held: the next one, which the rule lets through,
	// is answered meanwhile.
	for rule.Fired() == 0 {
		time.Sleep(time.Millisecond)
	}
	if code, _ := get(t, p.URL()+"/echo"); code != http.StatusOK {
		t.Fatalf("second request: %d", code)
	}
	select {
	case err := <-errc:
		t.Fatalf("the held request ended by itself: %v", err)
	default:
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("the held request ended with %v, want the client's cancellation", err)
	}
	if hits.Load() != 1 {
		t.Errorf("the server saw %d requests, want 1", hits.Load())
	}

	// Close ends held requests too.
	rule2 := p.AddRule(&FaultRule{Match: func(r *http.Request) bool { return true }, Hang: true})
	go func() {
		resp, err := http.Get(p.URL() + "/echo")
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	for rule2.Fired() == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err == nil {
		t.Error("a held request got an answer when the proxy closed")
	}
}
