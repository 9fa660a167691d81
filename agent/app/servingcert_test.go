package app_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/wire"
)

// TestAgentServesOnlyWithItsOwnCertificate: an agent asks for its
// certificate in its Lease and publishes no endpoint until it holds one; a
// certificate in the Lease for another node (for its very key) is not taken;
// the manager's certificate for its node is, and the agent then serves.
func TestAgentServesOnlyWithItsOwnCertificate(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	h := newHarness(t, nil)
	h.unsigned = true
	h.start()
	key := client.ObjectKey{Namespace: ns, Name: agentlease.Name(h.cfg.Policy, h.cfg.NodeName)}

	var lease coordinationv1.Lease
	var csr []byte
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, key, &lease)).To(Succeed())
		csr = []byte(lease.Annotations[agentlease.AnnotationServingCSR])
		_, err := pki.CheckAgentCSR(csr)
		g.Expect(err).NotTo(HaveOccurred())
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	g.Expect(lease.Annotations).NotTo(HaveKey(agentlease.AnnotationEndpoint))

	// A certificate of the policy's CA for the agent's key, naming another node.
	put := func(certPEM []byte) {
		t.Helper()
		g.Eventually(func() error {
			var l coordinationv1.Lease
			if err := k8s.Get(ctx, key, &l); err != nil {
				return err
			}
			patch := client.MergeFromWithOptions(l.DeepCopy(), client.MergeFromWithOptimisticLock{})
			l.Annotations[agentlease.AnnotationServingCert] = string(certPEM)
			return k8s.Patch(ctx, &l, patch)
		}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	}
	wrong, err := h.ca.SignAgentCSR(csr, h.cfg.Policy, "node-other", time.Now())
	must(t, err)
	put(wrong)
	// Two renewals later the agent has read it, and still publishes nothing.
	renewedTwice := func() {
		t.Helper()
		var start coordinationv1.Lease
		must(t, k8s.Get(ctx, key, &start))
		seen := 0
		last := start.Spec.RenewTime.Time
		g.Eventually(func(g Gomega) {
			var l coordinationv1.Lease
			g.Expect(k8s.Get(ctx, key, &l)).To(Succeed())
			if l.Spec.RenewTime.After(last) {
				seen++
				last = l.Spec.RenewTime.Time
			}
			g.Expect(seen).To(BeNumerically(">=", 2))
		}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	}
	renewedTwice()
	must(t, k8s.Get(ctx, key, &lease))
	g.Expect(lease.Annotations).NotTo(HaveKey(agentlease.AnnotationEndpoint), "the agent serves under another node's certificate")

	right, err := h.ca.SignAgentCSR(csr, h.cfg.Policy, h.cfg.NodeName, time.Now())
	must(t, err)
	put(right)
	resp, err := h.client.Get(h.endpoint(g) + wire.HealthPath)
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
}
