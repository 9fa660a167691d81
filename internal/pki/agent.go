package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Per-node agent serving certificates. Each agent makes its own key at start
// (it never leaves the agent's memory) and asks, through a certificate
// request in its node-bound Lease, for a certificate that names its policy
// and node. The manager signs it with the policy's CA, choosing everything in
// the certificate itself: from the request it takes the public key alone.
// When it dials an agent for a dump, it requires the certificate of the
// dump's node, so root on one node, holding its own agent's key, cannot
// answer for another node.

// AgentCertLifetime is how long an agent's serving certificate is valid; the
// manager renews it after two thirds (16 hours), and agents pick the new one
// up at their next Lease renewal.
const AgentCertLifetime = 24 * time.Hour

// MaxCSRBytes bounds the PEM certificate request an agent puts into its Lease
// (an agent's request is about 400 bytes).
const MaxCSRBytes = 4096

// MaxAgentCertBytes bounds the PEM certificate the manager puts into a Lease,
// and so what an agent reads from there (an issued one is about 700 bytes).
const MaxAgentCertBytes = 8192

// agentCommonName is the subject of every agent serving certificate; the
// identity is in the URI name alone.
const agentCommonName = "coredog-agent"

// AgentIdentity is the one URI name in the serving certificate of a policy's
// agent on a node, in the shape of a SPIFFE ID. It is a URI rather than a DNS
// name because policy and node names both may hold dots: as DNS labels,
// "<node>.<policy>" would be the same for node "a.b" of policy "p" and node
// "a" of policy "b.p"; as path segments they cannot meet.
func AgentIdentity(policy, node string) string {
	return (&url.URL{Scheme: "spiffe", Host: organization, Path: "/policy/" + policy + "/node/" + node}).String()
}

// NewAgentKey makes an agent's serving key and the certificate request it
// publishes: only the public key and a signature that proves the key.
func NewAgentKey() (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the serving key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, nil, fmt.Errorf("making the certificate request: %w", err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ErrBadCSR is returned for a certificate request the manager will not sign.
var ErrBadCSR = errors.New("certificate request refused")

// CheckAgentCSR reads an agent's certificate request, which the agent (or
// whoever holds its node) wrote, and returns its public key. It takes one
// PEM block of at most MaxCSRBytes, correctly self-signed, with an ECDSA
// P-256 key, and no extensions: no names, key usages or constraints of the
// requester's choosing, since the manager decides what the certificate says.
// The subject is ignored. Errors say what was wrong, never what was sent.
func CheckAgentCSR(csrPEM []byte) (*ecdsa.PublicKey, error) {
	if len(csrPEM) > MaxCSRBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrBadCSR, MaxCSRBytes)
	}
	block, rest := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" || len(bytes.TrimSpace(rest)) != 0 || len(block.Headers) != 0 {
		return nil, fmt.Errorf("%w: want exactly one PEM CERTIFICATE REQUEST", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: it does not parse", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: its signature does not verify", ErrBadCSR)
	}
	if len(csr.Extensions) != 0 || len(csr.ExtraExtensions) != 0 {
		return nil, fmt.Errorf("%w: it carries %d extensions; agents ask for none", ErrBadCSR, len(csr.Extensions))
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want an ECDSA P-256 key", ErrBadCSR)
	}
	return pub, nil
}

// SignAgentCSR checks an agent's certificate request and issues a serving
// certificate for its key that names exactly policy and node, valid for
// AgentCertLifetime (never past the CA). node must be the node the request
// is bound to (the holder of a Lease the agents' admission policy tied to it).
func (ca *CA) SignAgentCSR(csrPEM []byte, policy, node string, now time.Time) ([]byte, error) {
	pub, err := CheckAgentCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	id, err := url.Parse(AgentIdentity(policy, node))
	if err != nil {
		return nil, fmt.Errorf("naming the agent of node %s: %w", node, err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: agentCommonName, Organization: []string{organization}},
		URIs:        []*url.URL{id},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(AgentCertLifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	certPEM, _, err := signPublic(tmpl, ca.Cert, pub, ca.Key)
	return certPEM, err
}

// AgentCertNeedsRenewal says whether the certificate in an agent's Lease
// must be (re)issued for the key of csrPEM: it is missing or does not
// parse, is not from ca, is for another key or another identity, or is past
// two thirds of its life.
func AgentCertNeedsRenewal(certPEM []byte, ca *x509.Certificate, pub crypto.PublicKey, policy, node string, now time.Time) (bool, string) {
	if len(certPEM) == 0 {
		return true, "there is none"
	}
	if renew, why := NeedsRenewal(certPEM, ca, nil, now); renew {
		return true, why
	}
	cert, _ := ParseCertificate(certPEM)
	if !publicKeysEqual(pub, cert.PublicKey) {
		return true, "the agent asks for another key"
	}
	if CheckAgentIdentity(cert, policy, node) != nil {
		return true, "certificate names another agent"
	}
	return false, ""
}

// RenewAt is when AgentCertNeedsRenewal will say a valid certificate must go.
func RenewAt(certPEM []byte) (time.Time, bool) {
	cert, err := ParseCertificate(certPEM)
	if err != nil {
		return time.Time{}, false
	}
	return cert.NotBefore.Add(cert.NotAfter.Sub(cert.NotBefore) * 2 / 3), true
}

// ErrWrongAgent is returned when an agent's certificate does not name the
// agent the manager meant to reach.
var ErrWrongAgent = errors.New("the agent's certificate is not for this node")

// CheckAgentIdentity requires that a certificate names exactly the agent of
// policy on node, and nothing else.
func CheckAgentIdentity(cert *x509.Certificate, policy, node string) error {
	want := AgentIdentity(policy, node)
	if len(cert.URIs) != 1 || cert.URIs[0].String() != want || len(cert.DNSNames) != 0 || len(cert.IPAddresses) != 0 || len(cert.EmailAddresses) != 0 {
		return ErrWrongAgent
	}
	return nil
}

// VerifyAgent checks the certificate chain an agent presented: it chains to
// roots (the policy's CA) for server use, and names exactly the agent of
// policy on node.
func VerifyAgent(chain []*x509.Certificate, roots *x509.CertPool, policy, node string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("the agent presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the agent's certificate does not verify: %w", err)
	}
	return CheckAgentIdentity(chain[0], policy, node)
}

// AgentClientConfig is the TLS configuration the manager dials the agent of
// policy on node with: its client certificate, and a check that the agent's
// certificate is from roots and names that node. The standard host name
// check cannot do that (agents are dialled by the IP in their Lease, and
// the identity is a URI name), so the chain is verified in
// VerifyConnection instead, which runs on every handshake, resumed or not.
func AgentClientConfig(roots *x509.CertPool, client tls.Certificate, policy, node string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{client},
		ServerName:   AgentServerName(policy),
		// Verification is not skipped: VerifyConnection below does it,
		// against the policy's CA, and adds the node check.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return VerifyAgent(cs.PeerCertificates, roots, policy, node, time.Now())
		},
	}
}

func signPublic(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, serialLimit)
	if err != nil {
		return nil, nil, fmt.Errorf("generating serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, nil, fmt.Errorf("signing certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("reading signed certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), cert, nil
}
