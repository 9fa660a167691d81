//go:build nodesuite

package node

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Test9HelmUninstall uninstalls the release while CoreDumps with their
// cleanup finalizer exist: the uninstall completes, the Pipe agent
// restores the machine's core_pattern and core_pipe_limit before it goes,
// and this test reads both from the kernel.
func Test9HelmUninstall(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	ctx := context.Background()
	before := allDumps(Default)
	withFinalizer := 0
	for _, cd := range before {
		if len(cd.Finalizers) > 0 {
			withFinalizer++
		}
	}
	Expect(withFinalizer).To(BeNumerically(">", 0), "the earlier tests left no CoreDump with a finalizer")
	t0 := time.Now()
	helm(t, "uninstall", release, "-n", releaseNS, "--wait", "--timeout", "3m")
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(nd.Client.List(ctx, &pods, client.InNamespace(releaseNS))).To(Succeed())
		g.Expect(pods.Items).To(BeEmpty(), "CoreDog's pods are still there")
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	cp, err := CorePattern()
	Expect(err).NotTo(HaveOccurred())
	Expect(cp).To(Equal(nd.State.CorePattern), "core_pattern after helm uninstall")
	limit, err := CorePipeLimit()
	Expect(err).NotTo(HaveOccurred())
	Expect(limit).To(Equal(nd.State.CorePipeLimit), "core_pipe_limit after helm uninstall")
	t.Logf("helm uninstall with %d CoreDumps holding finalizers took %s; core_pattern %q and core_pipe_limit %s restored by the agent",
		withFinalizer, time.Since(t0).Round(time.Millisecond), cp, limit)
}
