package serve

import (
	"bytes"
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/wire"
)

// TestIdentityAcceptsOnlyItsOwnCertificate feeds the agent what a Lease
// could hold instead of its certificate: the agent must serve with none of
// it, and keep the certificate it has.
func TestIdentityAcceptsOnlyItsOwnCertificate(t *testing.T) {
	now := time.Now()
	ca, err := pki.NewCA("ca", now)
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA("other", now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := NewIdentity(testPolicy, testNode)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := NewIdentity(testPolicy, "node-2")
	if err != nil {
		t.Fatal(err)
	}
	sign := func(ca *pki.CA, csr []byte, policy, node string, at time.Time) []byte {
		t.Helper()
		c, err := ca.SignAgentCSR(csr, policy, node, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	good := sign(ca, id.CSR(), testPolicy, testNode, now)
	cases := []struct {
		name string
		cert []byte
	}{
		{"another node's certificate", sign(ca, peer.CSR(), testPolicy, "node-2", now)},
		{"this node's name for another key", sign(ca, peer.CSR(), testPolicy, testNode, now)},
		{"another policy", sign(ca, id.CSR(), "p2", testNode, now)},
		{"another CA", sign(other, id.CSR(), testPolicy, testNode, now)},
		{"expired", sign(ca, id.CSR(), testPolicy, testNode, now.Add(-2*pki.AgentCertLifetime))},
		{"not a certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
		{"too large", append(bytes.Repeat([]byte("#"), pki.MaxAgentCertBytes), good...)},
		{"a CA certificate", ca.CertPEM},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := id.Accept(tc.cert, ca.CertPEM, now); err == nil {
				t.Fatal("accepted")
			}
			if id.Valid(now) {
				t.Fatal("valid without a certificate of its own")
			}
		})
	}
	changed, err := id.Accept(good, ca.CertPEM, now)
	if err != nil || !changed {
		t.Fatalf("own certificate: changed %v, %v", changed, err)
	}
	if _, err := id.Accept(cases[0].cert, ca.CertPEM, now); err == nil {
		t.Fatal("replaced its certificate by another node's")
	}
	if got, err := id.getCertificate(nil); err != nil || !bytes.Equal(got.Leaf.Raw, mustParse(t, good).Raw) {
		t.Fatalf("certificate in use is not its own: %v", err)
	}
}

func mustParse(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := pki.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestNoHandshakeWithoutCertificate: until the manager issued its
// certificate, the agent completes no handshake, even with the controller.
func TestNoHandshakeWithoutCertificate(t *testing.T) {
	env := writeTLSDir(t, t.TempDir())
	fresh, err := NewIdentity(testPolicy, testNode)
	if err != nil {
		t.Fatal(err)
	}
	base := startServer(t, Options{TLSDir: env.dir, Identity: fresh})
	_, _, err = get(t, env.httpClient(t, env.client), base+wire.HealthPath)
	if err == nil {
		t.Fatal("a handshake completed without a serving certificate")
	}
	certPEM, err := env.ca.SignAgentCSR(fresh.CSR(), testPolicy, testNode, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Accept(certPEM, env.ca.CertPEM, time.Now()); err != nil {
		t.Fatal(err)
	}
	resp, _, err := get(t, env.httpClient(t, env.client), base+wire.HealthPath)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("with its certificate: %v %v", resp, err)
	}
}
