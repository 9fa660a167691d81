package controllers

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/scheme"
)

// The cache lags behind the reconciler's own writes: right after a policy
// is created, a reconcile may not see the CA and serving certificate the
// previous one applied. It must be kept, not issued again: a new CA would
// leave the agents that already took a certificate from the first
// unverifiable. The agents' former shared serving key goes.
func TestTLSIsNotReissuedWhileTheCacheLags(t *testing.T) {
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const namespace = "coredog-system"
	p := &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web", UID: "uid-web"}}
	ca, err := pki.NewCA("coredog web CA", now)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := ca.IssueServer([]string{"web.agent.coredog.io"}, now)
	if err != nil {
		t.Fatal(err)
	}
	caSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: agentset.CASecretName(p.Name), Namespace: namespace},
		Data:       map[string][]byte{pki.CACertKey: ca.CertPEM, pki.CAKeyKey: ca.KeyPEM},
	}
	legacy := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: agentset.LegacyAgentTLSSecretName(p.Name), Namespace: namespace},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{pki.CACertKey: ca.CertPEM, pki.TLSCertKey: kp.CertPEM, pki.TLSKeyKey: kp.KeyPEM},
	}
	s := scheme.New()
	apiServer := fake.NewClientBuilder().WithScheme(s).WithObjects(caSecret).Build()
	cache := fake.NewClientBuilder().WithScheme(s).WithObjects(legacy.DeepCopy()).Build() // has not seen the CA yet
	r := &CoreDumpPolicyReconciler{
		Client:    cache,
		APIReader: apiServer,
		Scheme:    s,
		Namespace: namespace,
		Clock:     clocktesting.NewFakePassiveClock(now),
	}
	got, err := r.ensureTLS(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if want := pki.Fingerprint(ca.CertPEM); got != want {
		t.Errorf("ensureTLS issued new material (fingerprint %s) over the CA the API server holds (%s)", got, want)
	}
	var agentCA corev1.Secret
	if err := cache.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: agentset.AgentCASecretName(p.Name)}, &agentCA); err != nil {
		t.Fatal(err)
	}
	if len(agentCA.Data) != 1 || string(agentCA.Data[pki.CACertKey]) != string(ca.CertPEM) {
		t.Errorf("the agents' Secret holds %d entries, want the CA certificate alone", len(agentCA.Data))
	}
	err = cache.Get(context.Background(), client.ObjectKeyFromObject(legacy), &corev1.Secret{})
	if !apierrors.IsNotFound(err) {
		t.Errorf("the agents' former shared serving key is still there: %v", err)
	}
}
