//go:build nodesuite

package node

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
)

// policyName is the chart's defaultPolicy.
const policyName = "default"

// installArgs are the values of every install and upgrade: the image from
// the local tarball (never pulled) and the chart's default policy storing
// into the suite's S3 server.
func chartArgs(extra ...string) []string {
	args := []string{
		filepath.Join(repoRoot, "charts", "coredog"), "-n", releaseNS,
		"--set", "image.repository=" + strings.Split(coredogImage, ":")[0],
		"--set", "image.tag=" + imageTag,
		"--set", "image.pullPolicy=Never",
		"--set", "defaultPolicy.enabled=true",
		"--set", "defaultPolicy.storage.url=" + storageURL(),
		"--set", "defaultPolicy.storage.existingSecret=" + s3Secret,
		"--wait", "--timeout", "4m",
	}
	return append(args, extra...)
}

// waitAgentReady waits until the policy's DaemonSet runs one ready agent
// on the node whose pod spec has hostPath dir, and returns the pod.
func waitAgentReady(t *testing.T, dir string) *corev1.Pod {
	t.Helper()
	var agent corev1.Pod
	Eventually(func(g Gomega) {
		var pods corev1.PodList
		g.Expect(nd.Client.List(context.Background(), &pods, client.InNamespace(releaseNS),
			client.MatchingLabels{"app.kubernetes.io/component": "agent"})).To(Succeed())
		var ready []corev1.Pod
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil || p.Spec.NodeName != NodeName || p.Status.Phase != corev1.PodRunning {
				continue
			}
			ok := false
			for _, v := range p.Spec.Volumes {
				if v.HostPath != nil && v.HostPath.Path == dir {
					ok = true
				}
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status != corev1.ConditionTrue {
					ok = false
				}
			}
			if ok {
				ready = append(ready, p)
			}
		}
		g.Expect(ready).To(HaveLen(1), "ready agent pods on %s with hostPath %s (of %d)", NodeName, dir, len(pods.Items))
		g.Expect(pods.Items).To(HaveLen(1), "agent pods: the old one must be gone")
		agent = ready[0]
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	return &agent
}

// Test1HelmInstall installs the chart as docs/install.md tells users to,
// with its default policy in Observe mode.
func Test1HelmInstall(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	t0 := time.Now()
	kubectl(t, "create", "namespace", releaseNS)
	kubectl(t, "label", "namespace", releaseNS, "pod-security.kubernetes.io/enforce=privileged")
	kubectl(t, "-n", releaseNS, "create", "secret", "generic", s3Secret,
		"--from-literal=AWS_ACCESS_KEY_ID="+s3AccessKey, "--from-literal=AWS_SECRET_ACCESS_KEY="+s3SecretKey)
	helm(t, append([]string{"install", release}, chartArgs("--set", "defaultPolicy.hostPath="+observeDir)...)...)

	var dep appsv1.Deployment
	Expect(nd.Client.Get(context.Background(), client.ObjectKey{Namespace: releaseNS, Name: "coredog-manager"}, &dep)).To(Succeed())
	Expect(dep.Status.ReadyReplicas).To(Equal(*dep.Spec.Replicas), "helm --wait returned before the manager was Ready")

	agent := waitAgentReady(t, observeDir)
	Expect(agent.Labels).NotTo(HaveKey(agentset.LabelPrivileged), "an Observe agent is not privileged")
	Eventually(func(g Gomega) {
		var lease coordinationv1.Lease
		g.Expect(nd.Client.Get(context.Background(), client.ObjectKey{Namespace: releaseNS, Name: agentlease.Name(policyName, NodeName)}, &lease)).To(Succeed())
		g.Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
		g.Expect(lease.Spec.RenewTime).NotTo(BeNil())
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	Eventually(func(g Gomega) {
		out, err := nd.RunKubectl(context.Background(), nil, "get", "cdp", policyName)
		g.Expect(err).NotTo(HaveOccurred())
		lines := strings.Split(strings.TrimSpace(out), "\n")
		g.Expect(lines).To(HaveLen(2), "kubectl get cdp:\n%s", out)
		head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
		g.Expect(head[:3]).To(Equal([]string{"NAME", "READY", "DESIRED"}))
		g.Expect(row[:3]).To(Equal([]string{policyName, "1", "1"}), "kubectl get cdp:\n%s", out)
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	t.Logf("installed: manager Ready, agent %s Running, Lease renewed, policy 1/1, in %s", agent.Name, time.Since(t0).Round(time.Millisecond))
}
