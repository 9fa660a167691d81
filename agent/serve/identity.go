package serve

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/coredog/coredog/internal/pki"
)

// Identity is the agent's serving key and the certificate the manager issued
// for it. The key is made when the agent starts and lives in its memory only:
// never in a file, a Secret or the hostPath, so no other node (and no later
// agent on this one) holds it. The manager learns the public key from the
// certificate request the agent publishes in its Lease, and hands back a
// certificate that names this agent's policy and node; until the agent has
// accepted one it completes no handshake.
type Identity struct {
	policy, node string
	key          *ecdsa.PrivateKey
	csr          []byte

	mu      sync.Mutex
	certPEM []byte
	cert    *tls.Certificate
}

// NewIdentity makes a fresh serving key for the agent of policy on node.
func NewIdentity(policy, node string) (*Identity, error) {
	key, csr, err := pki.NewAgentKey()
	if err != nil {
		return nil, err
	}
	return &Identity{policy: policy, node: node, key: key, csr: csr}, nil
}

// CSR is the PEM certificate request for the key, to publish in the Lease.
func (id *Identity) CSR() []byte { return id.csr }

// ErrNoCertificate is returned to a handshake before the agent holds a valid certificate.
var ErrNoCertificate = errors.New("the agent has no valid serving certificate yet")

// Accept takes the certificate found in the Lease. Only the manager may write
// it there, but the agent checks it anyway: at most pki.MaxAgentCertBytes,
// for this key, naming exactly this policy and node, from the CA in caPEM
// (the mounted ca.crt) and valid now. It reports whether the certificate in
// use changed; on error the previous one stays.
func (id *Identity) Accept(certPEM, caPEM []byte, now time.Time) (bool, error) {
	id.mu.Lock()
	defer id.mu.Unlock()
	if id.cert != nil && bytes.Equal(certPEM, id.certPEM) {
		return false, nil
	}
	if len(certPEM) > pki.MaxAgentCertBytes {
		return false, fmt.Errorf("serving certificate: over %d bytes", pki.MaxAgentCertBytes)
	}
	cert, err := pki.ParseCertificate(certPEM)
	if err != nil {
		return false, fmt.Errorf("serving certificate: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return false, fmt.Errorf("loading %s: no certificate", pki.CACertKey)
	}
	if err := pki.VerifyAgent([]*x509.Certificate{cert}, roots, id.policy, id.node, now); err != nil {
		return false, fmt.Errorf("serving certificate: %w", err)
	}
	if !id.key.PublicKey.Equal(cert.PublicKey) {
		return false, errors.New("serving certificate: it is for another key")
	}
	id.certPEM = certPEM
	id.cert = &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: id.key, Leaf: cert}
	return true, nil
}

// Valid reports whether the agent holds a certificate valid at now.
func (id *Identity) Valid(now time.Time) bool {
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert != nil && now.Before(id.cert.Leaf.NotAfter) && !now.Before(id.cert.Leaf.NotBefore)
}

func (id *Identity) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !id.Valid(time.Now()) {
		return nil, ErrNoCertificate
	}
	id.mu.Lock()
	defer id.mu.Unlock()
	return id.cert, nil
}
