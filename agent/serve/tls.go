package serve

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/go-logr/logr"

	"github.com/coredog/coredog/internal/pki"
)

// tlsMaterial is the content of the three files of a TLS directory.
type tlsMaterial struct {
	ca, cert, key []byte
}

func (m tlsMaterial) equal(o tlsMaterial) bool {
	return bytes.Equal(m.ca, o.ca) && bytes.Equal(m.cert, o.cert) && bytes.Equal(m.key, o.key)
}

func readTLSMaterial(dir string) (tlsMaterial, error) {
	var m tlsMaterial
	for _, f := range []struct {
		name string
		dst  *[]byte
	}{{pki.CACertKey, &m.ca}, {pki.TLSCertKey, &m.cert}, {pki.TLSKeyKey, &m.key}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return tlsMaterial{}, fmt.Errorf("reading TLS material: %w", err)
		}
		*f.dst = b
	}
	return m, nil
}

// tlsReloader hands every handshake a configuration built from the current
// content of the TLS directory. It compares content rather than mtimes: a
// Secret volume swaps files through symlinks and a test may rewrite them
// within one clock tick, and three small reads cost little next to a
// handshake.
type tlsReloader struct {
	dir      string
	clientCN string
	log      logr.Logger

	mu      sync.Mutex
	current tlsMaterial // what cfg was built from
	tried   tlsMaterial // the last material that failed to load, to log it once
	cfg     *tls.Config
}

func newTLSReloader(dir, clientCN string, log logr.Logger) (*tlsReloader, error) {
	t := &tlsReloader{dir: dir, clientCN: clientCN, log: log}
	m, err := readTLSMaterial(dir)
	if err != nil {
		return nil, err
	}
	cfg, err := t.build(m)
	if err != nil {
		return nil, err
	}
	t.current, t.cfg = m, cfg
	return t, nil
}

// config returns the configuration for one handshake. While the directory is
// half-written (new certificate, old key) it keeps serving the last good one.
func (t *tlsReloader) config() *tls.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, err := readTLSMaterial(t.dir)
	if err != nil {
		t.log.V(1).Info("Keeping previous TLS material", "err", err.Error())
		return t.cfg
	}
	if m.equal(t.current) || m.equal(t.tried) {
		return t.cfg
	}
	cfg, err := t.build(m)
	if err != nil {
		t.tried = m
		t.log.Error(err, "Keeping previous TLS material", "dir", t.dir)
		return t.cfg
	}
	t.current, t.cfg, t.tried = m, cfg, tlsMaterial{}
	t.log.Info("Reloaded TLS material", "dir", t.dir, "fingerprint", pki.Fingerprint(m.ca, m.cert))
	return cfg
}

func (t *tlsReloader) build(m tlsMaterial) (*tls.Config, error) {
	pair, err := tls.X509KeyPair(m.cert, m.key)
	if err != nil {
		return nil, fmt.Errorf("loading %s and %s: %w", pki.TLSCertKey, pki.TLSKeyKey, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(m.ca) {
		return nil, fmt.Errorf("loading %s: no certificate", pki.CACertKey)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{pair},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		// One download per connection is the usual case; HTTP/2 would add
		// per-stream flow control to a single long stream and gain nothing.
		NextProtos: []string{"http/1.1"},
		// A resumed session would skip verifying the client against a
		// rotated CA; dumps are rare, full handshakes are cheap.
		SessionTicketsDisabled: true,
		VerifyConnection:       t.verifyPeer,
	}, nil
}

// verifyPeer runs after chain verification against ClientCAs: any certificate
// of the CA would pass that, so the common name narrows it to the controller.
func (t *tlsReloader) verifyPeer(cs tls.ConnectionState) error {
	if !peerIs(cs.PeerCertificates, t.clientCN) {
		cn := ""
		if len(cs.PeerCertificates) > 0 {
			cn = cs.PeerCertificates[0].Subject.CommonName
		}
		t.log.Info("Rejected client certificate", "commonName", cn, "want", t.clientCN)
		return errWrongClient
	}
	return nil
}

var errWrongClient = errors.New("client certificate is not the controller's")

func peerIs(certs []*x509.Certificate, cn string) bool {
	return len(certs) > 0 && certs[0].Subject.CommonName == cn
}
