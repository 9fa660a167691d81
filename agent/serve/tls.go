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

// readCA reads the CA certificate of a TLS directory (the mounted Secret
// holds ca.crt alone: the serving key is the agent's own, see Identity).
func readCA(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, pki.CACertKey))
	if err != nil {
		return nil, fmt.Errorf("reading TLS material: %w", err)
	}
	return b, nil
}

// ReadCA is the CA certificate in dir, which also verifies the serving
// certificate the manager issues (Identity.Accept).
func ReadCA(dir string) ([]byte, error) { return readCA(dir) }

// tlsReloader hands every handshake a configuration built from the current
// CA certificate in the TLS directory and the agent's Identity. It compares
// content rather than mtimes: a Secret volume swaps files through symlinks
// and a test may rewrite them within one clock tick, and one small read
// costs little next to a handshake.
type tlsReloader struct {
	dir      string
	clientCN string
	id       *Identity
	log      logr.Logger

	mu      sync.Mutex
	current []byte // the CA cfg was built from
	tried   []byte // the last CA that failed to load, to log it once
	cfg     *tls.Config
}

func newTLSReloader(dir, clientCN string, id *Identity, log logr.Logger) (*tlsReloader, error) {
	t := &tlsReloader{dir: dir, clientCN: clientCN, id: id, log: log}
	m, err := readCA(dir)
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

// config returns the configuration for one handshake. While the CA file
// cannot be read or does not parse it keeps the last good one.
func (t *tlsReloader) config() *tls.Config {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, err := readCA(t.dir)
	if err != nil {
		t.log.V(1).Info("Keeping previous TLS material", "err", err.Error())
		return t.cfg
	}
	if bytes.Equal(m, t.current) || bytes.Equal(m, t.tried) {
		return t.cfg
	}
	cfg, err := t.build(m)
	if err != nil {
		t.tried = m
		t.log.Error(err, "Keeping previous TLS material", "dir", t.dir)
		return t.cfg
	}
	t.current, t.cfg, t.tried = m, cfg, nil
	t.log.Info("Reloaded the CA certificate", "dir", t.dir, "fingerprint", pki.Fingerprint(m))
	return cfg
}

func (t *tlsReloader) build(ca []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, fmt.Errorf("loading %s: no certificate", pki.CACertKey)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// The manager's certificate for this node, once there is one;
		// until then every handshake fails.
		GetCertificate: t.id.getCertificate,
		ClientAuth:     tls.RequireAndVerifyClientCert,
		ClientCAs:      pool,
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
