package localcluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// LoopbackTLS is a self-signed certificate for 127.0.0.1, for a test server
// that speaks https on loopback. CertFile is also the only root a client
// needs: a process trusts it with SSL_CERT_FILE=CertFile (Go's x509 reads
// that variable on Linux).
type LoopbackTLS struct {
	CertFile, KeyFile string
	Roots             *x509.CertPool
}

// NewLoopbackTLS writes a key and a certificate valid for 127.0.0.1 (a day)
// into dir.
func NewLoopbackTLS(dir string) (*LoopbackTLS, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(now.UnixNano()),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	t := &LoopbackTLS{CertFile: filepath.Join(dir, "loopback.crt"), KeyFile: filepath.Join(dir, "loopback.key"), Roots: x509.NewCertPool()}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(t.CertFile, certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(t.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if !t.Roots.AppendCertsFromPEM(certPEM) {
		return nil, fmt.Errorf("the certificate written to %s does not parse", t.CertFile)
	}
	return t, nil
}

// Client is an HTTP client that trusts only the certificate.
func (t *LoopbackTLS) Client() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: t.Roots, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr}
}
