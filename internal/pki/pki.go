// Package pki makes and checks the private certificate authority that secures
// the controller-to-agent channel: one CA per CoreDumpPolicy, a serving
// certificate per agent (naming its node and policy, for a key the agent made
// and keeps) and a client certificate for the controller. It owns key
// generation, issuance, the check of an agent's identity and the rotation
// rule; it must not read or write Kubernetes objects (the controller and the
// agent store and publish what it makes).
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Keys in the Secrets that hold the material (the kubernetes.io/tls layout plus the CA).
const (
	CACertKey  = "ca.crt"
	CAKeyKey   = "ca.key"
	TLSCertKey = "tls.crt"
	TLSKeyKey  = "tls.key"
)

// organization is the subject organization of every certificate, and the
// trust domain of agents' identities.
const organization = "coredog.io"

// ControllerCommonName is the subject the agents require of a client certificate.
const ControllerCommonName = "coredog-controller"

// Lifetimes. Certificates are renewed once two thirds of their life has passed.
const (
	CALifetime   = 5 * 365 * 24 * time.Hour
	LeafLifetime = 365 * 24 * time.Hour
	// clockSkew backdates NotBefore so that nodes with a slightly slow clock accept new certificates.
	clockSkew = 5 * time.Minute
)

// AgentServerName is the server name (SNI) the controller sends to a
// policy's agents; what it verifies is the agent's identity
// (AgentIdentity), since agents are dialled by IP.
func AgentServerName(policy string) string {
	return policy + ".agent.coredog.io"
}

// CA is a certificate authority with its key.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte
	KeyPEM  []byte
}

// KeyPair is an issued certificate with its key, PEM-encoded.
type KeyPair struct {
	CertPEM []byte
	KeyPEM  []byte
}

// NewCA makes a self-signed CA valid from now for CALifetime.
func NewCA(commonName string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{organization}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	certPEM, cert, err := sign(tmpl, tmpl, key, key)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// ParseCA reads a CA back from PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, errors.New("reading CA certificate: not a CA")
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("reading CA key: no PEM block")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("reading CA key: not a signing key")
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, errors.New("reading CA: key does not match certificate")
	}
	return &CA{Cert: cert, Key: signer, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// IssueServer issues a serving certificate for the given DNS names.
func (ca *CA) IssueServer(dnsNames []string, now time.Time) (*KeyPair, error) {
	if len(dnsNames) == 0 {
		return nil, errors.New("issuing server certificate: no DNS names")
	}
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: dnsNames[0], Organization: []string{organization}},
		DNSNames:    dnsNames,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, now)
}

// IssueClient issues a client certificate with the given common name.
func (ca *CA) IssueClient(commonName string, now time.Time) (*KeyPair, error) {
	return ca.issue(&x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName, Organization: []string{organization}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, now)
}

func (ca *CA) issue(tmpl *x509.Certificate, now time.Time) (*KeyPair, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating key: %w", err)
	}
	tmpl.NotBefore = now.Add(-clockSkew)
	tmpl.NotAfter = now.Add(LeafLifetime)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	certPEM, _, err := sign(tmpl, ca.Cert, key, ca.Key)
	if err != nil {
		return nil, err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &KeyPair{CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// NeedsRenewal says whether a certificate should be replaced: it does not
// parse, it is not signed by ca (when ca is given), it lacks one of the DNS
// names, or two thirds of its lifetime have passed.
func NeedsRenewal(certPEM []byte, ca *x509.Certificate, dnsNames []string, now time.Time) (bool, string) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return true, "certificate does not parse"
	}
	if ca != nil {
		if err := cert.CheckSignatureFrom(ca); err != nil {
			return true, "certificate is not signed by the current CA"
		}
	}
	for _, name := range dnsNames {
		if cert.VerifyHostname(name) != nil {
			return true, "certificate does not cover " + name
		}
	}
	life := cert.NotAfter.Sub(cert.NotBefore)
	if now.After(cert.NotBefore.Add(life * 2 / 3)) {
		return true, "certificate is past two thirds of its lifetime"
	}
	return false, ""
}

// ParseCertificate reads the first certificate of a PEM bundle.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// Fingerprint is a short hash of PEM material, used to roll pods when it changes.
func Fingerprint(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

var serialLimit = new(big.Int).Lsh(big.NewInt(1), 127)

func sign(tmpl, parent *x509.Certificate, key *ecdsa.PrivateKey, signer crypto.Signer) ([]byte, *x509.Certificate, error) {
	return signPublic(tmpl, parent, key.Public(), signer)
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
