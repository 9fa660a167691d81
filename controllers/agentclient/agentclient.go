// Package agentclient is the controller's side of the agent's dump endpoint:
// it dials an agent over mutual TLS with a client certificate from the
// policy's CA, talks only to an agent whose certificate from that CA names
// the dump's node, and returns the dump as a stream of compressed bytes that
// checks itself. It owns that check: the stream ends cleanly only when the
// bytes that arrived have the length and CRC-32C the agent's stream
// trailers give, and the raw size the agent read equals the size the
// CoreDump recorded; otherwise the reader fails instead of ending cleanly, so
// a store never confirms a dump that did not arrive whole. The raw size and
// SHA-256 come from the agent, which computed them while reading the file;
// the stream is not decoded here (an unencoded stream is the raw bytes, so
// its SHA-256 is checked too). An agent that does not declare those stream
// trailers (one older than its controller) gets the older check: a decoder
// recomputes the raw size and SHA-256 as the bytes pass. It does not read
// Kubernetes objects or storage.
package agentclient

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/wire"
)

// ErrIntegrity is returned when a dump did not arrive as the agent read it.
var ErrIntegrity = errors.New("dump failed its integrity check")

// ErrNotServed is returned when the agent does not have the dump (404).
var ErrNotServed = errors.New("the agent does not serve this dump")

// ErrUnreachable is returned when no answer came: the connection, the TLS
// handshake or the stream failed. The error says no more than that; the
// transport's words (addresses, ports, "connection refused" against "i/o
// timeout") go to the log of the context only, since the endpoint comes from
// a Lease an agent wrote and errors reach the CoreDump's status.
var ErrUnreachable = errors.New("the agent could not be reached")

// ErrRefused is returned for any other answer than 200 and 404, redirects
// included; the error names the status code only.
var ErrRefused = errors.New("the agent refused the download")

// Credentials are what the controller presents to one policy's agents.
type Credentials struct {
	Policy string
	// CACertPEM verifies the agent; Cert is the controller's client certificate.
	CACertPEM []byte
	Cert      tls.Certificate
}

// NewCredentials issues a client certificate from the policy's CA.
func NewCredentials(policy string, ca *pki.CA, now time.Time) (*Credentials, error) {
	kp, err := ca.IssueClient(pki.ControllerCommonName, now)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("loading client certificate: %w", err)
	}
	return &Credentials{Policy: policy, CACertPEM: ca.CertPEM, Cert: cert}, nil
}

// Client fetches dumps from agents.
type Client struct {
	policy string
	roots  *x509.CertPool
	cert   tls.Certificate
}

// New makes a client for one policy's agents.
func New(c *Credentials) (*Client, error) {
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(c.CACertPEM) {
		return nil, errors.New("the policy's CA certificate does not parse")
	}
	return &Client{policy: c.Policy, roots: roots, cert: c.Cert}, nil
}

// transport dials the agent of node only: the handshake fails unless the
// agent presents a certificate of the policy's CA that names that node
// (pki.AgentClientConfig). One transport serves one download and keeps no
// connection: a pooled connection, verified for one node, could otherwise
// carry the download of another node whose Lease names the same address.
func (c *Client) transport(node string) *http.Transport {
	return &http.Transport{
		TLSClientConfig:       pki.AgentClientConfig(c.roots, c.cert, c.policy, node),
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		DisableKeepAlives:     true,
		// The body is compressed by the agent on purpose; never let the
		// transport decode it.
		DisableCompression: true,
	}
}

// refuseRedirect keeps the client on the agent it dialled. An agent is
// hostile input: following its redirect would present the controller's
// client certificate to another node's agent (and store that node's dump
// under the first one's CoreDump), or send requests anywhere in the
// cluster. A redirect is answered as the error status it is.
func refuseRedirect(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Close releases the client. Downloads keep no connections, so there is
// nothing to drop; it stays for callers that cache clients.
func (c *Client) Close() {}

// Stream is a dump in transit: Read yields the compressed bytes; the final
// Read returns io.EOF only when the integrity check passed.
type Stream struct {
	body     io.ReadCloser
	resp     *http.Response
	expected int64
	log      logr.Logger

	mode wire.Compression
	// received and sum are the body's length and CRC-32C so far; head
	// holds its first bytes. plain is its SHA-256, for an unencoded
	// stream only.
	received int64
	sum      hash.Hash
	plain    hash.Hash
	head     [wire.MagicLen]byte

	// pw feeds the decoder, for agents without stream trailers only; nil
	// otherwise.
	pw      *io.PipeWriter
	decoded chan result
	rawSum  hash.Hash

	once        sync.Once
	err         error
	decodedSeen bool
	// RawSize and SHA256 are set when the stream ended cleanly.
	RawSize int64
	SHA256  string
	// CommandLine is the crashed process's arguments from the agent's
	// wire.CommandLineHeader, made safe to store and show
	// (wire.SafeCommandLine); empty when the agent sent none, or a value
	// that is malformed or too long.
	CommandLine string
}

type result struct {
	n   int64
	err error
}

// Fetch asks the agent of node at endpoint for a dump: only an agent whose
// certificate names node (the CoreDump's spec.nodeName) gets the request.
// expectedSize is the size the CoreDump recorded.
func (c *Client) Fetch(ctx context.Context, endpoint, node, name string, compression coredogv1.Compression, expectedSize int64) (*Stream, error) {
	base, err := agentlease.ParseEndpoint(endpoint)
	if err != nil {
		return nil, err
	}
	if !wire.ValidName(name) {
		return nil, fmt.Errorf("invalid dump name %q", name)
	}
	mode := wire.FromAPI(compression)
	u := base.JoinPath(wire.DumpsPath, name)
	u.RawQuery = url.Values{wire.CompressionParam: {string(mode)}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	log := logr.FromContextOrDiscard(ctx)
	hc := &http.Client{Transport: c.transport(node), CheckRedirect: refuseRedirect}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("fetching %s: %w", name, ctx.Err())
		}
		log.Info("Cannot fetch a dump from its agent", "coredump", name, "endpoint", base.Host, "err", err.Error())
		return nil, fmt.Errorf("%w: fetching %s", ErrUnreachable, name)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s", ErrNotServed, name)
	default:
		// Only the status code: the reason phrase and the body are the
		// agent's words, and errors end up in the CoreDump's status, which
		// every agent can read.
		resp.Body.Close()
		return nil, fmt.Errorf("%w: %s: HTTP %d", ErrRefused, name, resp.StatusCode)
	}
	if got := resp.Header.Get(wire.CompressionHeader); got != string(mode) {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: fetching %s: the agent answered in another encoding than the %s asked for", ErrIntegrity, name, mode)
	}
	s := &Stream{body: resp.Body, resp: resp, mode: mode, expected: expectedSize, sum: wire.NewStreamChecksum(), log: log.WithValues("coredump", name, "endpoint", base.Host)}
	if mode == wire.CompressionNone {
		s.plain = sha256.New()
	}
	s.CommandLine = commandLine(resp.Header, s.log)
	if !wire.StreamChecked(resp.Trailer) {
		pr, pw := io.Pipe()
		s.pw, s.decoded, s.rawSum = pw, make(chan result, 1), sha256.New()
		go s.decode(pr, mode)
	}
	return s, nil
}

// commandLine reads the command line an agent sent: its word, so bounded
// and escaped, and never quoted into an error (errors reach the CoreDump's
// status, which every agent can read).
func commandLine(h http.Header, log logr.Logger) string {
	vs := h.Values(wire.CommandLineHeader)
	if len(vs) == 0 {
		return ""
	}
	raw, ok := wire.DecodeCommandLine(vs[0])
	if !ok || len(vs) > 1 {
		log.Info("Ignoring a malformed command line from the agent", "headerBytes", len(vs[0]), "headers", len(vs))
		return ""
	}
	return wire.SafeCommandLine(raw)
}

func (s *Stream) decode(pr *io.PipeReader, mode wire.Compression) {
	var r io.Reader = pr
	switch mode {
	case wire.CompressionZstd:
		d, err := zstd.NewReader(pr, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(wire.MaxZstdWindow))
		if err != nil {
			s.finishDecode(pr, 0, err)
			return
		}
		defer d.Close()
		r = d
	case wire.CompressionGzip:
		g, err := gzip.NewReader(pr)
		if err != nil {
			s.finishDecode(pr, 0, err)
			return
		}
		defer g.Close()
		r = g
	}
	n, err := io.Copy(s.rawSum, r)
	s.finishDecode(pr, n, err)
}

func (s *Stream) finishDecode(pr *io.PipeReader, n int64, err error) {
	// Unblock the reading side whatever happened.
	pr.CloseWithError(err)
	_, _ = io.Copy(io.Discard, pr)
	s.decoded <- result{n: n, err: err}
}

// Read passes compressed bytes on, and checks the whole at the end.
func (s *Stream) Read(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n, err := s.body.Read(p)
	if n > 0 {
		if s.received < int64(len(s.head)) {
			copy(s.head[s.received:], p[:n])
		}
		s.received += int64(n)
		s.sum.Write(p[:n])
		if s.plain != nil {
			s.plain.Write(p[:n])
		}
		if s.pw != nil {
			if _, werr := s.pw.Write(p[:n]); werr != nil {
				s.fail(fmt.Errorf("%w: the stream does not decode: %v", ErrIntegrity, werr))
				return 0, s.err
			}
		}
	}
	if err == io.EOF {
		if verr := s.verify(); verr != nil {
			return n, verr
		}
		return n, io.EOF
	}
	if err != nil {
		s.log.Info("Reading a dump from its agent failed", "err", err.Error())
		s.fail(fmt.Errorf("%w: the stream broke off after %d bytes", ErrUnreachable, s.received))
		return n, s.err
	}
	return n, nil
}

func (s *Stream) verify() error {
	if s.pw != nil {
		return s.verifyDecoded()
	}
	t := s.resp.Trailer
	size, serr := strconv.ParseInt(t.Get(wire.RawSizeTrailer), 10, 64)
	claimed := t.Get(wire.RawSHA256Trailer)
	sent, nerr := strconv.ParseInt(t.Get(wire.StreamSizeTrailer), 10, 64)
	sentSum := t.Get(wire.StreamCRC32CTrailer)
	got := hex.EncodeToString(s.sum.Sum(nil))
	switch {
	case serr != nil || nerr != nil || claimed == "" || sentSum == "":
		s.fail(fmt.Errorf("%w: the agent sent no size or checksum trailer (stream cut short?)", ErrIntegrity))
	case sent != s.received || sentSum != got:
		s.fail(fmt.Errorf("%w: the agent sent %d bytes (crc32c %s) but %d bytes (crc32c %s) arrived", ErrIntegrity, sent, shownHex(sentSum, 8), s.received, got))
	case !isSHA256(claimed) || size < 0:
		s.fail(fmt.Errorf("%w: the agent's raw size %d or sha256 %s is malformed", ErrIntegrity, size, shownHex(claimed, 2*sha256.Size)))
	case !s.framed(size, claimed):
		s.fail(fmt.Errorf("%w: %d bytes arrived that are not a %s stream of %d bytes", ErrIntegrity, s.received, s.mode, size))
	case s.expected >= 0 && size != s.expected:
		s.fail(fmt.Errorf("%w: the file has %d bytes but the CoreDump recorded %d: it changed after capture", ErrIntegrity, size, s.expected))
	default:
		s.RawSize, s.SHA256 = size, claimed
		return nil
	}
	return s.err
}

// verifyDecoded checks a stream from an agent without stream trailers
// against what the decoder recomputed.
func (s *Stream) verifyDecoded() error {
	_ = s.pw.Close()
	res := <-s.decoded
	s.decodedSeen = true
	if res.err != nil {
		s.fail(fmt.Errorf("%w: the stream does not decode: %v", ErrIntegrity, res.err))
		return s.err
	}
	sum := hex.EncodeToString(s.rawSum.Sum(nil))
	size, serr := strconv.ParseInt(s.resp.Trailer.Get(wire.RawSizeTrailer), 10, 64)
	claimed := s.resp.Trailer.Get(wire.RawSHA256Trailer)
	switch {
	case serr != nil || claimed == "":
		s.fail(fmt.Errorf("%w: the agent sent no size or checksum trailer (stream cut short?)", ErrIntegrity))
	case size != res.n || claimed != sum:
		s.fail(fmt.Errorf("%w: the agent read %d bytes (sha256 %s) but %d bytes (sha256 %s) arrived", ErrIntegrity, size, shownHex(claimed, 2*sha256.Size), res.n, sum))
	case s.expected >= 0 && res.n != s.expected:
		s.fail(fmt.Errorf("%w: the file has %d bytes but the CoreDump recorded %d: it changed after capture", ErrIntegrity, res.n, s.expected))
	default:
		s.RawSize, s.SHA256 = res.n, sum
		return nil
	}
	return s.err
}

// framed is the check that remains without decoding: the body starts as
// its encoding does, or is the raw file itself when not encoded.
func (s *Stream) framed(rawSize int64, rawSum string) bool {
	head := s.head[:min(s.received, int64(len(s.head)))]
	if !s.mode.Framed(head, s.received, rawSize) {
		return false
	}
	return s.mode != wire.CompressionNone || hex.EncodeToString(s.plain.Sum(nil)) == rawSum
}

// isSHA256 reports whether v is a SHA-256 in lower-case hex, as it will be
// recorded in the CoreDump's status.
func isSHA256(v string) bool { return isHex(v, 2*sha256.Size) }

// isHex reports whether v is n lower-case hex digits.
func isHex(v string, n int) bool {
	if len(v) != n {
		return false
	}
	for _, c := range v {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// shownHex is a trailer's checksum as an error may show it: the agent chose
// it, and errors reach the CoreDump's status, so anything but n hex digits
// is shown as "(malformed)".
func shownHex(v string, n int) string {
	if isHex(v, n) {
		return v
	}
	return "(malformed)"
}

func (s *Stream) fail(err error) {
	s.once.Do(func() {
		s.err = err
		if s.pw != nil {
			s.pw.CloseWithError(err)
		}
	})
}

// Close releases the connection and the decoder.
func (s *Stream) Close() error {
	s.fail(errors.New("stream closed"))
	err := s.body.Close()
	if s.pw != nil && !s.decodedSeen {
		<-s.decoded
		s.decodedSeen = true
	}
	return err
}
