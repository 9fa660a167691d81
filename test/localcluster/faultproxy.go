package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// FaultProxy is an HTTP reverse proxy on loopback in front of one server
// (the S3 server, in the fault tests) that injects faults on command: it
// fails chosen requests with an error status, throttles the bytes that pass
// through it, or refuses connections as a server that is down would. A
// client pointed at it sees the server through it, Host header included, so
// signed requests (AWS SigV4 signs the host) still verify.
type FaultProxy struct {
	target *url.URL
	addr   string
	proxy  *httputil.ReverseProxy
	srv    *http.Server
	lim    limiter

	mu       sync.Mutex
	ln       net.Listener
	serveErr chan error
	conns    map[net.Conn]struct{}
	rules    []*FaultRule
	log      []ProxiedRequest
	closed   bool
	// closing ends the requests that hang.
	closing chan struct{}
}

// ProxiedRequest is one request the proxy saw, and what it answered.
type ProxiedRequest struct {
	Method, Path, RawQuery string
	// Status is the status sent to the client; 0 when the request failed
	// before an answer (the server unreachable, the client gone).
	Status int
	// Injected reports that a rule answered instead of the server.
	Injected bool
}

// maxLoggedRequests bounds the request log; a 1 GiB upload is a few
// hundred requests.
const maxLoggedRequests = 100000

// StartFaultProxy starts a proxy on a free loopback port in front of target
// (an http:// base URL).
func StartFaultProxy(target string) (*FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("fault proxy target %q is not an http:// URL", target)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fault proxy: %w", err)
	}
	p := &FaultProxy{target: u, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}, closing: make(chan struct{})}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(p.target)
			// The client signed the Host it dialled.
			pr.Out.Host = pr.In.Host
			if pr.Out.Body != nil && pr.Out.Body != http.NoBody {
				pr.Out.Body = &throttledBody{ctx: pr.In.Context(), r: pr.Out.Body, lim: &p.lim}
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Body = &throttledBody{ctx: resp.Request.Context(), r: resp.Body, lim: &p.lim}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// The server is down or the client went away: cut the
			// connection, as a client talking to the server directly would
			// see it, rather than invent an answer.
			panic(http.ErrAbortHandler)
		},
		// Stream request and response bodies as they come.
		FlushInterval: -1,
	}
	p.srv = &http.Server{
		Handler:           http.HandlerFunc(p.serveHTTP),
		ReadHeaderTimeout: 30 * time.Second,
		ConnState:         p.trackConn,
		ErrorLog:          nil,
	}
	p.serve(ln)
	return p, nil
}

// URL is the proxy's base URL, to use in place of the target's.
func (p *FaultProxy) URL() string { return "http://" + p.addr }

// Addr is the proxy's host:port.
func (p *FaultProxy) Addr() string { return p.addr }

func (p *FaultProxy) serve(ln net.Listener) {
	errc := make(chan error, 1)
	p.ln, p.serveErr = ln, errc
	go func() { errc <- p.srv.Serve(ln) }()
}

func (p *FaultProxy) trackConn(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

// FaultRule fails requests that Match: the Nth matching request (1 for the
// first) and the Count-1 after it are answered with Status and an S3-style
// XML error body, without reaching the server; or, with Hang, never
// answered: the proxy reads nothing more of them and holds them until the
// client gives up or the proxy is closed, as a server that hangs would.
type FaultRule struct {
	Match  func(*http.Request) bool
	Nth    int
	Count  int
	Status int
	Hang   bool

	mu      sync.Mutex
	matched int
	fired   int
}

// Fired is how many requests the rule has failed so far.
func (r *FaultRule) Fired() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fired
}

// Matched is how many requests matched the rule so far, failed or not.
func (r *FaultRule) Matched() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.matched
}

func (r *FaultRule) take(req *http.Request) bool {
	if !r.Match(req) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.matched++
	if r.matched >= r.Nth && r.matched < r.Nth+r.Count {
		r.fired++
		return true
	}
	return false
}

// FailNth makes the proxy answer the nth request that match selects (1 for
// the first) with status, and returns the rule to read its counts.
func (p *FaultProxy) FailNth(match func(*http.Request) bool, nth, status int) *FaultRule {
	return p.AddRule(&FaultRule{Match: match, Nth: nth, Count: 1, Status: status})
}

// AddRule adds a rule; rules are tried in the order they were added, and
// the first that fires answers the request.
func (p *FaultProxy) AddRule(r *FaultRule) *FaultRule {
	if r.Nth < 1 {
		r.Nth = 1
	}
	if r.Count < 1 {
		r.Count = 1
	}
	if r.Status == 0 {
		r.Status = http.StatusInternalServerError
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, r)
	return r
}

// ClearRules removes every rule.
func (p *FaultProxy) ClearRules() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
}

// Throttle limits the bytes of request and response bodies that pass
// through the proxy, all connections together, to bytesPerSecond; 0 lifts
// the limit. It applies to bodies already in flight too.
func (p *FaultProxy) Throttle(bytesPerSecond int64) { p.lim.setRate(bytesPerSecond) }

// Refuse closes the proxy's listening socket, so that new connections are
// refused, and cuts every open connection, requests in flight included: to
// a client, the server went down. Accept undoes it.
func (p *FaultProxy) Refuse() error {
	p.mu.Lock()
	ln, errc := p.ln, p.serveErr
	p.ln = nil
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	if ln == nil {
		return nil
	}
	err := ln.Close()
	<-errc //nolint:errcheck // the accept loop's end: its error is the Close above
	for _, c := range conns {
		_ = c.Close()
	}
	return err
}

// Accept listens again on the proxy's address after Refuse. Another process
// may have taken the port meanwhile (unlikely on loopback within seconds);
// Accept retries for a few seconds before it gives up.
func (p *FaultProxy) Accept() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("fault proxy: closed")
	}
	if p.ln != nil {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		ln, err := net.Listen("tcp", p.addr)
		if err == nil {
			p.serve(ln)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("fault proxy: listening on %s again: %w", p.addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Requests returns the requests the proxy has seen, oldest first.
func (p *FaultProxy) Requests() []ProxiedRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]ProxiedRequest(nil), p.log...)
}

// Close stops the proxy and cuts its connections.
func (p *FaultProxy) Close() error {
	p.mu.Lock()
	if !p.closed {
		close(p.closing)
	}
	p.closed = true
	p.mu.Unlock()
	p.lim.setRate(0)
	err := p.Refuse()
	_ = p.srv.Close()
	return err
}

func (p *FaultProxy) serveHTTP(w http.ResponseWriter, r *http.Request) {
	entry := ProxiedRequest{Method: r.Method, Path: r.URL.Path, RawQuery: r.URL.RawQuery}
	p.mu.Lock()
	var fire *FaultRule
	for _, rule := range p.rules {
		if rule.take(r) {
			fire = rule
			break
		}
	}
	p.mu.Unlock()
	rec := &statusRecorder{ResponseWriter: w}
	defer func() {
		entry.Status = rec.status
		p.mu.Lock()
		if len(p.log) < maxLoggedRequests {
			p.log = append(p.log, entry)
		}
		p.mu.Unlock()
	}()
	if fire != nil {
		entry.Injected = true
		if fire.Hang {
			select {
			case <-r.Context().Done():
			case <-p.closing:
			}
			panic(http.ErrAbortHandler)
		}
		writeS3Error(rec, fire.Status)
		return
	}
	p.proxy.ServeHTTP(rec, r)
}

// writeS3Error answers as an S3 server does, so that SDKs parse the error
// and apply their own retry policy to it.
func writeS3Error(w http.ResponseWriter, status int) {
	code := "InternalError"
	switch {
	case status == http.StatusServiceUnavailable:
		code = "SlowDown"
	case status < 500:
		code = "InvalidRequest"
	}
	w.Header().Set("Content-Type", "application/xml")
	w.Header().Set("Connection", "close")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>%s</Code><Message>Injected by the fault proxy</Message><RequestId>fault-proxy</RequestId></Error>`, code)
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (flushes).
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// MatchS3UploadPart matches the S3 UploadPart request of part n (1-based)
// of any multipart upload.
func MatchS3UploadPart(n int) func(*http.Request) bool {
	want := strconv.Itoa(n)
	return func(r *http.Request) bool {
		q := r.URL.Query()
		return r.Method == http.MethodPut && q.Has("uploadId") && q.Get("partNumber") == want
	}
}

// limiter passes bytes at a set rate, shared by every body it throttles:
// each chunk reserves the next slot and waits until that slot has passed.
type limiter struct {
	mu   sync.Mutex
	rate int64
	next time.Time
}

func (l *limiter) setRate(bytesPerSecond int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rate = bytesPerSecond
	l.next = time.Time{}
}

// chunk is how many bytes a throttled read passes at most: small enough
// that a slow rate is smooth, large enough not to cost much CPU.
func (l *limiter) chunk(max int) int {
	l.mu.Lock()
	rate := l.rate
	l.mu.Unlock()
	if rate <= 0 {
		return max
	}
	c := int(rate / 20)
	if c < 512 {
		c = 512
	}
	if c > 64<<10 {
		c = 64 << 10
	}
	return min(c, max)
}

// wait blocks until n more bytes may pass.
func (l *limiter) wait(ctx context.Context, n int) error {
	l.mu.Lock()
	if l.rate <= 0 {
		l.mu.Unlock()
		return nil
	}
	until := l.reserveLocked(n, time.Now())
	l.mu.Unlock()
	t := time.NewTimer(time.Until(until))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// reserveLocked books n bytes after those already booked (or from now, if
// the limiter has been idle: an idle limiter saves up no burst) and returns
// when they may have passed.
func (l *limiter) reserveLocked(n int, now time.Time) time.Time {
	if l.next.Before(now) {
		l.next = now
	}
	l.next = l.next.Add(time.Duration(int64(n) * int64(time.Second) / l.rate))
	return l.next
}

// throttledBody reads at the limiter's pace.
type throttledBody struct {
	ctx context.Context
	r   io.ReadCloser
	lim *limiter
}

func (b *throttledBody) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := b.r.Read(p[:b.lim.chunk(len(p))])
	if n > 0 {
		if werr := b.lim.wait(b.ctx, n); werr != nil {
			return 0, werr
		}
	}
	return n, err
}

func (b *throttledBody) Close() error { return b.r.Close() }
