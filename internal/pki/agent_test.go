package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

func csrPEM(t *testing.T, tmpl *x509.CertificateRequest, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestSignAgentCSRNamesOnlyTheBoundNode is the attack of an agent (or root
// on its node) that writes a certificate request of its own making into its
// Lease, asking for another node's name, other names, a CA, or a key the
// manager did not expect: it gets no certificate, or one that names the node
// the manager binds it to and nothing else.
func TestSignAgentCSRNamesOnlyTheBoundNode(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ca, err := NewCA("ca", now)
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	victim, _ := url.Parse(AgentIdentity("p", "node-b"))
	_, good, err := NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	forgedSubject := csrPEM(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "node-b", Organization: []string{"system:nodes"}}}, p256)
	wrongSig := csrPEM(t, &x509.CertificateRequest{}, p256)
	block, _ := pem.Decode(wrongSig)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	wrongSig = pem.EncodeToMemory(block)
	cases := []struct {
		name    string
		csr     []byte
		refused string
	}{
		{"the agent's own request", good, ""},
		{"a forged subject is not copied", forgedSubject, ""},
		{"another node's URI name", csrPEM(t, &x509.CertificateRequest{URIs: []*url.URL{victim}}, p256), "extensions"},
		{"DNS names", csrPEM(t, &x509.CertificateRequest{DNSNames: []string{"node-b.p.agent.coredog.io", AgentServerName("p")}}, p256), "extensions"},
		{"an IP address", csrPEM(t, &x509.CertificateRequest{IPAddresses: []net.IP{net.ParseIP("10.0.0.2")}}, p256), "extensions"},
		{"a CA basic constraint", csrPEM(t, &x509.CertificateRequest{ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: []byte{0x30, 0x03, 0x01, 0x01, 0xff}}}}, p256), "extensions"},
		{"a P-384 key", csrPEM(t, &x509.CertificateRequest{}, p384), "P-256"},
		{"an RSA key", csrPEM(t, &x509.CertificateRequest{}, rsaKey), "P-256"},
		{"an Ed25519 key", csrPEM(t, &x509.CertificateRequest{}, edKey), "P-256"},
		{"a broken signature", wrongSig, "signature"},
		{"two requests", append(append([]byte{}, good...), good...), "exactly one"},
		{"a certificate instead", ca.CertPEM, "exactly one"},
		{"not PEM", []byte("hello"), "exactly one"},
		{"over the bound", append(bytes.Repeat([]byte("\n"), MaxCSRBytes), good...), "bytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, err := ca.SignAgentCSR(tc.csr, "p", "node-a", now)
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("err = %v, want a refusal about %q", err, tc.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cert, err := ParseCertificate(certPEM)
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			roots.AddCert(ca.Cert)
			if err := VerifyAgent([]*x509.Certificate{cert}, roots, "p", "node-a", now); err != nil {
				t.Fatalf("not a certificate of node-a: %v", err)
			}
			if err := VerifyAgent([]*x509.Certificate{cert}, roots, "p", "node-b", now); err == nil {
				t.Fatal("verifies as node-b")
			}
			if cert.Subject.CommonName != agentCommonName || len(cert.DNSNames) != 0 || cert.IsCA || len(cert.URIs) != 1 {
				t.Fatalf("the certificate says more than the manager chose: %+v %v %v", cert.Subject, cert.DNSNames, cert.URIs)
			}
			if got := cert.NotAfter.Sub(now); got > AgentCertLifetime {
				t.Fatalf("lives %v, over %v", got, AgentCertLifetime)
			}
		})
	}
}

// TestAgentIdentitiesDoNotMeet: names with dots cannot make two agents'
// identities equal, as "<node>.<policy>" DNS names would.
func TestAgentIdentitiesDoNotMeet(t *testing.T) {
	pairs := [][2]string{{"p", "a.b"}, {"b.p", "a"}, {"p.a", "b"}, {"p", "a/b"}, {"p/node/a", "b"}}
	seen := map[string][2]string{}
	for _, pn := range pairs {
		id := AgentIdentity(pn[0], pn[1])
		if prev, ok := seen[id]; ok {
			t.Fatalf("%v and %v share %s", prev, pn, id)
		}
		seen[id] = pn
	}
}

func TestAgentCertNeedsRenewal(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	ca, _ := NewCA("ca", now)
	other, _ := NewCA("other", now)
	key, csr, _ := NewAgentKey()
	_, csr2, _ := NewAgentKey()
	pub2, _ := CheckAgentCSR(csr2)
	cert, err := ca.SignAgentCSR(csr, "p", "n", now)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		cert   []byte
		ca     *x509.Certificate
		pub    crypto.PublicKey
		policy string
		node   string
		at     time.Time
		want   bool
	}{
		{"fresh", cert, ca.Cert, key.Public(), "p", "n", now.Add(time.Hour), false},
		{"none", nil, ca.Cert, key.Public(), "p", "n", now, true},
		{"new CA", cert, other.Cert, key.Public(), "p", "n", now, true},
		{"new key", cert, ca.Cert, pub2, "p", "n", now, true},
		{"another node", cert, ca.Cert, key.Public(), "p", "m", now, true},
		{"two thirds of life", cert, ca.Cert, key.Public(), "p", "n", now.Add(AgentCertLifetime * 7 / 10), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, why := AgentCertNeedsRenewal(tc.cert, tc.ca, tc.pub, tc.policy, tc.node, tc.at); got != tc.want {
				t.Fatalf("= %v (%s), want %v", got, why, tc.want)
			}
		})
	}
	at, ok := RenewAt(cert)
	if !ok || at.After(now.Add(AgentCertLifetime)) || at.Before(now) {
		t.Fatalf("RenewAt = %v, %v", at, ok)
	}
}
