package pki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

func TestIssueAndVerify(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, err := NewCA("test-ca", now)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ParseCA(ca.CertPEM, ca.KeyPEM)
	if err != nil {
		t.Fatalf("ParseCA: %v", err)
	}
	server, err := again.IssueServer([]string{AgentServerName("p1")}, now)
	if err != nil {
		t.Fatal(err)
	}
	client, err := again.IssueClient(ControllerCommonName, now)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	for name, kp := range map[string]*KeyPair{"server": server, "client": client} {
		pair, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
		if err != nil {
			t.Fatalf("%s key pair: %v", name, err)
		}
		usage := x509.ExtKeyUsageServerAuth
		if name == "client" {
			usage = x509.ExtKeyUsageClientAuth
		}
		if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			t.Fatalf("%s does not verify: %v", name, err)
		}
	}
	other, _ := NewCA("other", now)
	if _, err := ParseCA(ca.CertPEM, other.KeyPEM); err == nil {
		t.Fatal("ParseCA accepted a key that does not match the certificate")
	}
}

func TestNeedsRenewal(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ca, _ := NewCA("ca", now)
	other, _ := NewCA("other", now)
	names := []string{AgentServerName("p1")}
	kp, _ := ca.IssueServer(names, now)
	cases := []struct {
		name  string
		cert  []byte
		ca    *x509.Certificate
		names []string
		at    time.Time
		want  bool
	}{
		{"fresh", kp.CertPEM, ca.Cert, names, now.Add(time.Hour), false},
		{"garbage", []byte("nope"), ca.Cert, names, now, true},
		{"other CA", kp.CertPEM, other.Cert, names, now, true},
		{"missing name", kp.CertPEM, ca.Cert, []string{AgentServerName("p2")}, now, true},
		{"two thirds of life", kp.CertPEM, ca.Cert, names, now.Add(LeafLifetime * 7 / 10), true},
		{"just before two thirds", kp.CertPEM, ca.Cert, names, now.Add(LeafLifetime / 2), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, why := NeedsRenewal(tc.cert, tc.ca, tc.names, tc.at)
			if got != tc.want {
				t.Fatalf("NeedsRenewal = %v (%s), want %v", got, why, tc.want)
			}
		})
	}
}
