//go:build nodesuite

package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
)

// pipePattern is the core_pattern a Pipe agent sets for pipeDir.
const pipePattern = "|" + pipeDir + "/.coredog/agent receive %P %p %I %i %s %t %u %g %d %h %e"

// Test3HelmUpgradeToPipe upgrades the release to a Pipe policy: the
// DaemonSet rolls, and the new, privileged agent sets the machine's
// core_pattern to its receiver and core_pipe_limit to 16.
func Test3HelmUpgradeToPipe(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	t0 := time.Now()
	helm(t, append([]string{"upgrade", release}, chartArgs("--set", "defaultPolicy.hostPath="+pipeDir, "--set", "defaultPolicy.corePattern=Pipe")...)...)
	agent := waitAgentReady(t, pipeDir)
	Expect(agent.Labels).To(HaveKeyWithValue(agentset.LabelPrivileged, "true"))
	Eventually(func(g Gomega) {
		cp, err := CorePattern()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(cp).To(Equal(pipePattern))
		limit, err := CorePipeLimit()
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(limit).To(Equal("16"))
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	t.Logf("upgraded to Pipe in %s: agent %s set core_pattern %q", time.Since(t0).Round(time.Millisecond), agent.Name, pipePattern)
}

// Test4PipeCrash crashes a Deployment's container in Pipe mode: the kernel
// pipes each core to the receiver, and each crash becomes one CoreDump,
// attributed by the container ID of the real cgroup, uploaded, announced
// by an Event on the pod, and downloaded byte for byte by the plugin.
func Test4PipeCrash(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	ctx := context.Background()
	ensureNamespace(t, workloadNS)
	d := crasherDeployment("piped", 1, nil, nil)
	Expect(nd.Client.Create(ctx, d)).To(Succeed())
	t.Cleanup(func() { _ = nd.Client.Delete(ctx, d) })

	// One CoreDump per crash: while the container waits in CrashLoopBackOff
	// (no crash can happen), the count of crashes and of dumps agree.
	var pod corev1.Pod
	var dumps []coredogv1.CoreDump
	Eventually(func(g Gomega) {
		pods := podsOf(g, "piped")
		g.Expect(pods).To(HaveLen(1))
		pod = pods[0]
		g.Expect(pod.Status.ContainerStatuses).To(HaveLen(1))
		cs := pod.Status.ContainerStatuses[0]
		g.Expect(cs.State.Waiting).NotTo(BeNil(), "the container is not in back-off")
		g.Expect(cs.State.Waiting.Reason).To(Equal("CrashLoopBackOff"))
		n := crashes(pods)
		dumps = dumpsOf(g, "piped")
		g.Expect(dumps).To(HaveLen(n), "crashes %d, CoreDumps %d", n, len(dumps))
		for _, cd := range dumps {
			g.Expect(cd.Status.Phase).To(BeElementOf(coredogv1.PhaseUploaded, coredogv1.PhaseSkipped), describeDump(cd))
		}
		// Still the same back-off: nothing crashed while we counted.
		var again corev1.Pod
		g.Expect(nd.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &again)).To(Succeed())
		g.Expect(again.Status.ContainerStatuses[0].RestartCount).To(Equal(cs.RestartCount))
	}).WithTimeout(uploadTimeout).WithPolling(pollInterval).Should(Succeed())

	// The latest dump is the container's last termination.
	cs := pod.Status.ContainerStatuses[0]
	last := cs.LastTerminationState.Terminated
	Expect(last).NotTo(BeNil())
	Expect(last.ExitCode).To(BeEquivalentTo(139))
	var cd *coredogv1.CoreDump
	for i := range dumps {
		if "containerd://"+dumps[i].Spec.ContainerID == last.ContainerID || dumps[i].Spec.ContainerID == last.ContainerID {
			cd = &dumps[i]
		}
	}
	Expect(cd).NotTo(BeNil(), "no CoreDump has the container ID of the last termination %s", last.ContainerID)
	Expect(cd.Status.Phase).To(Equal(coredogv1.PhaseUploaded), describeDump(*cd))
	p := cd.Status.Pod
	Expect(p.Name).To(Equal(pod.Name))
	Expect(p.UID).To(Equal(string(pod.UID)))
	Expect(p.ResolvedBy).To(Equal(coredogv1.ResolvedByContainerID))
	Expect(p.Container).To(Equal("app"))
	Expect(p.Image).To(Equal(crasherImage))
	Expect(p.ImageID).To(Equal(cs.ImageID))
	Expect(p.WorkloadKind).To(Equal("Deployment"))
	Expect(p.WorkloadName).To(Equal("piped"))
	Expect(cd.Spec.Process.Executable).To(Equal("crasher"))
	Expect(cd.Spec.Process.SignalName).To(Equal("SIGSEGV"))
	Expect(cd.Spec.ELF).NotTo(BeNil())
	Expect(cd.Spec.ELF.Truncated).To(BeFalse())

	// The Event on the pod.
	Eventually(func(g Gomega) {
		var evs eventsv1.EventList
		g.Expect(nd.Client.List(ctx, &evs, client.InNamespace(workloadNS))).To(Succeed())
		found := false
		for _, e := range evs.Items {
			if e.Reason == coredogv1.EventCoreDumped && e.Regarding.Name == pod.Name && strings.Contains(e.Note, cd.Name) {
				found = true
			}
		}
		g.Expect(found).To(BeTrue(), "no CoreDumped Event on pod %s naming %s", pod.Name, cd.Name)
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())

	// kubectl coredog download: the stored core, byte for byte what the
	// agent read (its size and the SHA-256 the manager recorded).
	out := filepath.Join(t.TempDir(), "dump.core")
	_, err := plugin(t, s3Env, "download", cd.Name, "-n", releaseNS, "-o", out)
	Expect(err).NotTo(HaveOccurred())
	sum, size := fileSHA256(t, out)
	Expect(size).To(Equal(cd.Spec.Size))
	Expect(sum).To(Equal(cd.Status.Storage.SHA256))
	head := make([]byte, 4)
	f, err := os.Open(out)
	Expect(err).NotTo(HaveOccurred())
	_, _ = f.Read(head)
	f.Close()
	Expect(string(head)).To(Equal("\x7fELF"))

	desc, err := plugin(t, s3Env, "describe", cd.Name, "-n", releaseNS)
	Expect(err).NotTo(HaveOccurred())
	Expect(desc).To(ContainSubstring(pod.Name))
	Expect(desc).To(ContainSubstring("SIGSEGV"))
	group, err := plugin(t, s3Env, "list", "--group", "-n", releaseNS)
	Expect(err).NotTo(HaveOccurred())
	Expect(group).To(ContainSubstring("piped"))
	t.Logf("kubectl coredog describe:\n%s\nkubectl coredog list --group:\n%s", desc, group)

	Expect(nd.Client.Delete(ctx, d)).To(Succeed())
	Eventually(func(g Gomega) { g.Expect(podsOf(g, "piped")).To(BeEmpty()) }).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
}

// Test5CrashLoopRateLimit crash-loops three replicas: every crash still
// gets its CoreDump, but only the rate limit's count (5 an hour per
// workload and signature, the default) are uploaded; the rest are
// Skipped as Throttled.
func Test5CrashLoopRateLimit(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	ctx := context.Background()
	d := crasherDeployment("looper", 3, nil, nil)
	Expect(nd.Client.Create(ctx, d)).To(Succeed())
	t.Cleanup(func() { _ = nd.Client.Delete(ctx, d) })
	var dumps []coredogv1.CoreDump
	Eventually(func(g Gomega) {
		dumps = dumpsOf(g, "looper")
		g.Expect(len(dumps)).To(BeNumerically(">=", 8), "CoreDumps of the crash loop so far")
		for _, cd := range dumps {
			g.Expect(cd.Status.Phase.IsFinal()).To(BeTrue(), describeDump(cd))
		}
	}).WithTimeout(uploadTimeout).WithPolling(pollInterval).Should(Succeed())
	Expect(nd.Client.Delete(ctx, d)).To(Succeed())
	uploaded, throttled := 0, 0
	for _, cd := range dumps {
		switch {
		case cd.Status.Phase == coredogv1.PhaseUploaded:
			uploaded++
		case cd.Status.Phase == coredogv1.PhaseSkipped && cd.Status.Reason == coredogv1.ReasonThrottled:
			throttled++
		default:
			t.Errorf("unexpected %s", describeDump(cd))
		}
	}
	Expect(uploaded).To(Equal(int(coredogv1.DefaultRateLimitCount)))
	Expect(throttled).To(Equal(len(dumps) - uploaded))
	t.Logf("crash loop: %d CoreDumps, %d uploaded, %d throttled", len(dumps), uploaded, throttled)
	Eventually(func(g Gomega) { g.Expect(podsOf(g, "looper")).To(BeEmpty()) }).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
}
