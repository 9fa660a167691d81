package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
)

const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 90 * time.Second
	// shutdownTimeout is how long running downloads may go on after Serve's
	// context ends; the controller retries what gets cut off.
	shutdownTimeout = 10 * time.Second
	maxHeaderBytes  = 16 << 10
)

// Server serves the handler over mutually authenticated TLS.
type Server struct {
	srv *http.Server
	ln  net.Listener
	log logr.Logger
}

// NewServer listens on addr (which may be "127.0.0.1:0") and prepares to serve
// the dump routes with TLS 1.2 or later, requiring a client certificate
// signed by TLSDir's ca.crt with ClientCommonName, and presenting the
// certificate of opts.Identity (no handshake completes before the Identity
// has one). It fails if the CA cannot be loaded now; later changes are
// picked up on the next handshake. The listener is released when Serve returns.
func NewServer(opts Options, addr string) (*Server, error) {
	opts = opts.withDefaults()
	if opts.TLSDir == "" {
		return nil, errors.New("creating dump server: no TLS directory")
	}
	if opts.Identity == nil {
		return nil, errors.New("creating dump server: no serving identity")
	}
	reloader, err := newTLSReloader(opts.TLSDir, opts.ClientCommonName, opts.Identity, opts.Logger)
	if err != nil {
		return nil, fmt.Errorf("creating dump server: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("creating dump server: listening on %s: %w", addr, err)
	}
	tlsCfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return reloader.config(), nil
		},
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	srv := &http.Server{
		Handler:   newHandler(opts),
		Protocols: &protocols,
		// Also bounds the TLS handshake. There is no ReadTimeout or
		// WriteTimeout: requests have no body, and a download's writes get
		// their own rolling deadline instead of one for the whole dump.
		ReadHeaderTimeout: opts.readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          log.New(logWriter{opts.Logger}, "", 0),
	}
	return &Server{srv: srv, ln: tls.NewListener(ln, tlsCfg), log: opts.Logger}, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string {
	return s.ln.Addr().String()
}

// Serve serves until ctx is done, then shuts down: running downloads get
// shutdownTimeout to finish before their connections are closed. Call it once.
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.log.Info("Serving core dumps", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("serving core dumps: %w", err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.srv.Shutdown(shutCtx); err != nil {
		// Cut the downloads that did not finish in time; their handlers see
		// the request context end and close their files. The controller
		// retries, so this is not the caller's error.
		s.log.Info("Cutting core dump downloads still running at shutdown", "err", err.Error())
		_ = s.srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serving core dumps: %w", err)
	}
	return nil
}

// logWriter sends net/http's own complaints (mostly failed handshakes, which
// anyone who can reach the port can cause) to the logger at V(1).
type logWriter struct{ log logr.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	w.log.V(1).Info("HTTP server error", "err", strings.TrimSpace(string(p)))
	return len(p), nil
}
