package controllers

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/scheme"
)

// TestAgentCertIsIssuedForTheHolderAndRenewed: the certificate in an agent's
// Lease names the Lease's holder and policy, is kept while fresh, renewed
// after two thirds of its life and for a new key; a Lease that is no
// policy's for its holder gets none.
func TestAgentCertIsIssuedForTheHolderAndRenewed(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	const namespace = "coredog-system"
	ca, err := pki.NewCA("web CA", now)
	if err != nil {
		t.Fatal(err)
	}
	_, csr, err := pki.NewAgentKey()
	if err != nil {
		t.Fatal(err)
	}
	leaseOf := func(name, holder string) *coordinationv1.Lease {
		return &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace,
				Annotations: map[string]string{agentlease.AnnotationServingCSR: string(csr)}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: new(holder)},
		}
	}
	// Node "b" may write "web.a.b" as its own Lease of a policy "web.a",
	// which does not exist; that it is also the name of node a.b's Lease of
	// policy "web" makes it no Lease of node a.b.
	own := leaseOf(agentlease.Name("web", "a.b"), "b")
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(
		&coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "web"}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: agentset.CASecretName("web"), Namespace: namespace},
			Data: map[string][]byte{pki.CACertKey: ca.CertPEM, pki.CAKeyKey: ca.KeyPEM}},
		own,
	).Build()
	clock := clocktesting.NewFakePassiveClock(now)
	r := &AgentCertReconciler{Client: c, Namespace: namespace, Clock: clock}
	reconcileLease := func(l *coordinationv1.Lease) (ctrl.Result, string) {
		t.Helper()
		res, err := r.Reconcile(ctx, ctrl.Request{NamespacedName: client.ObjectKeyFromObject(l)})
		if err != nil {
			t.Fatal(err)
		}
		var got coordinationv1.Lease
		if err := c.Get(ctx, client.ObjectKeyFromObject(l), &got); err != nil {
			t.Fatal(err)
		}
		return res, got.Annotations[agentlease.AnnotationServingCert]
	}

	if _, cert := reconcileLease(own); cert != "" {
		t.Fatal("a certificate for a Lease that is no policy's for its holder")
	}
	// Held by node a.b, as its agent holds it.
	var held coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKeyFromObject(own), &held); err != nil {
		t.Fatal(err)
	}
	held.Spec.HolderIdentity = new("a.b")
	if err := c.Update(ctx, &held); err != nil {
		t.Fatal(err)
	}
	res, first := reconcileLease(own)
	cert, err := pki.ParseCertificate([]byte(first))
	if err != nil {
		t.Fatalf("no certificate: %v", err)
	}
	if err := pki.CheckAgentIdentity(cert, "web", "a.b"); err != nil {
		t.Fatalf("the certificate does not name node a.b of web: %v", cert.URIs)
	}
	if want := pki.AgentCertLifetime * 2 / 3; res.RequeueAfter < want-time.Hour || res.RequeueAfter > want {
		t.Fatalf("renewal in %v, want about %v", res.RequeueAfter, want)
	}
	clock.SetTime(now.Add(time.Hour))
	if _, again := reconcileLease(own); again != first {
		t.Fatal("a fresh certificate was replaced")
	}
	clock.SetTime(now.Add(pki.AgentCertLifetime * 7 / 10))
	_, renewed := reconcileLease(own)
	if renewed == first {
		t.Fatal("not renewed after two thirds of its life")
	}
	// The agent restarted with a new key.
	_, csr2, _ := pki.NewAgentKey()
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKeyFromObject(own), &l); err != nil {
		t.Fatal(err)
	}
	l.Annotations[agentlease.AnnotationServingCSR] = string(csr2)
	if err := c.Update(ctx, &l); err != nil {
		t.Fatal(err)
	}
	_, forNewKey := reconcileLease(own)
	pub2, _ := pki.CheckAgentCSR(csr2)
	if renew, why := pki.AgentCertNeedsRenewal([]byte(forNewKey), ca.Cert, pub2, "web", "a.b", clock.Now()); renew {
		t.Fatalf("the certificate is not for the new key: %s", why)
	}
}
