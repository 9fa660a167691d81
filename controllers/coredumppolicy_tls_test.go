package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/scheme"
)

// The cache lags behind the reconciler's own writes: right after a policy
// is created, a reconcile may not see the CA and serving certificate the
// previous one applied. Both must be kept, not issued again: a new CA would
// leave the agents that already took the first certificate unverifiable.
func TestTLSIsNotReissuedWhileTheCacheLags(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const namespace = "coredog-system"
	p := &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "uid-web"}}
	ca, err := pki.NewCA("coredog web CA", now)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueServer([]string{pki.AgentServerName(p.Name)}, now)
	if err != nil {
		t.Fatal(err)
	}
	caSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: agentset.CASecretName(p.Name), Namespace: namespace},
		Data:       map[string][]byte{pki.CACertKey: ca.CertPEM, pki.CAKeyKey: ca.KeyPEM},
	}
	tlsSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: agentset.AgentTLSSecretName(p.Name), Namespace: namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{pki.CACertKey: ca.CertPEM, pki.TLSCertKey: kp.CertPEM, pki.TLSKeyKey: kp.KeyPEM},
	}
	s := scheme.New()
	apiServer := fake.NewClientBuilder().WithScheme(s).WithObjects(caSecret, tlsSecret).Build()
	r := &CoreDumpPolicyReconciler{
		Client:    fake.NewClientBuilder().WithScheme(s).Build(), // the cache, which has seen neither
		APIReader: apiServer,
		Scheme:    s,
		Namespace: namespace,
		Clock:     clocktesting.NewFakePassiveClock(now),
	}
	got, err := r.ensureTLS(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if want := pki.Fingerprint(ca.CertPEM, kp.CertPEM); got != want {
		t.Errorf("ensureTLS issued new material (fingerprint %s) over the CA and certificate the API server holds (%s)", got, want)
	}
}
