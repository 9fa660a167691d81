//go:build nodesuite

package node

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Test2ObserveMode runs the policy as docs/install.md recommends for
// Observe: the admin sets core_pattern to <hostPath>/<fileNamePattern>, and
// a container's crash is captured only when its pod mounts hostPath at the
// same path. It shows what Observe captures (the mounted pod's cores,
// attributed by container ID through %P) and what it cannot (the same
// crash in a pod without the mount leaves no core anywhere CoreDog looks).
func Test2ObserveMode(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	ctx := context.Background()
	ensureNamespace(t, workloadNS)
	pattern := observeDir + "/core.%h.%e.%P.%s.%t"
	t.Cleanup(func() {
		if err := nd.State.RestoreKernel(); err != nil {
			t.Error(err)
		}
	})
	Expect(SetCorePattern(pattern)).To(Succeed())
	// The crasher runs as 65532 and the kernel writes its core as that
	// user: the directory the kubelet made (root's, 0755) must let it, as
	// /tmp does.
	Expect(os.Chmod(observeDir, 0o1777)).To(Succeed())

	mounted := crasherDeployment("observed", 1, nil, func(s *corev1.PodSpec) {
		s.Volumes = []corev1.Volume{{Name: "cores", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: observeDir}}}}
		s.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cores", MountPath: observeDir}}
	})
	unmounted := crasherDeployment("unmounted", 1, nil, nil)
	Expect(nd.Client.Create(ctx, unmounted)).To(Succeed())
	Expect(nd.Client.Create(ctx, mounted)).To(Succeed())
	t.Cleanup(func() {
		_ = nd.Client.Delete(ctx, mounted)
		_ = nd.Client.Delete(ctx, unmounted)
	})

	// The unmounted pod crashes: the kernel resolves the pattern in the
	// container's mount namespace, where observeDir does not exist.
	var unmountedCrashed time.Time
	Eventually(func(g Gomega) {
		pods := podsOf(g, "unmounted")
		g.Expect(pods).To(HaveLen(1))
		for _, cs := range pods[0].Status.ContainerStatuses {
			term := cs.LastTerminationState.Terminated
			if term == nil {
				term = cs.State.Terminated
			}
			g.Expect(term).NotTo(BeNil(), "the unmounted crasher has not crashed yet")
			g.Expect(term.ExitCode).To(BeEquivalentTo(139), "SIGSEGV")
			unmountedCrashed = term.FinishedAt.Time
		}
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())

	// The mounted pod's core is captured, attributed and uploaded.
	var first coredogv1.CoreDump
	Eventually(func(g Gomega) {
		dumps := dumpsOf(g, "observed")
		g.Expect(dumps).NotTo(BeEmpty(), "no CoreDump of the mounted crasher yet")
		first = dumps[0]
		g.Expect(first.Status.Phase).To(Equal(coredogv1.PhaseUploaded), describeDump(first))
	}).WithTimeout(uploadTimeout).WithPolling(pollInterval).Should(Succeed())
	p := first.Status.Pod
	// With a path pattern the kernel keeps nothing of the process for the
	// agent: it reads /proc/<%P>/cgroup only if the container's process
	// is still there (it is while the kernel writes the core), and else
	// matches the pod by the hostname in the file name, which for a pod
	// is its name. Both find this pod; only Pipe mode holds the process
	// until the receiver is done (core_pipe_limit).
	Expect(p.ResolvedBy).To(BeElementOf(coredogv1.ResolvedByContainerID, coredogv1.ResolvedByHostname), describeDump(first))
	Expect(p.Name).To(HavePrefix("observed-"))
	Expect(p.Container).To(Equal("app"))
	Expect(p.Image).To(Equal(crasherImage))
	Expect(p.WorkloadKind).To(Equal("Deployment"))
	Expect(first.Spec.Process.Executable).To(Equal("crasher"))
	Expect(first.Spec.Process.SignalName).To(Equal("SIGSEGV"))

	// A core of the mounted crasher that was written after the unmounted
	// one crashed shows that the agent was watching then: the unmounted
	// crash left nothing.
	Eventually(func(g Gomega) {
		later := false
		for _, cd := range dumpsOf(g, "observed") {
			if cd.Spec.DetectedAt.After(unmountedCrashed.Add(time.Second)) {
				later = true
			}
		}
		g.Expect(later).To(BeTrue(), "no core of the mounted crasher after %s yet", unmountedCrashed)
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	for _, cd := range allDumps(Default) {
		if cd.Status.Pod != nil && strings.Contains(cd.Status.Pod.Name, "unmounted") {
			t.Errorf("the unmounted crasher's crash was captured in Observe mode: %s", describeDump(cd))
		}
	}
	t.Logf("Observe: the mounted pod's cores are captured (%s, resolved by %s); the pod without the mount crashed (exit 139) and left no core",
		first.Name, p.ResolvedBy)

	Expect(nd.Client.Delete(ctx, mounted)).To(Succeed())
	Expect(nd.Client.Delete(ctx, unmounted)).To(Succeed())
	Eventually(func(g Gomega) {
		g.Expect(podsOf(g, "observed")).To(BeEmpty())
		g.Expect(podsOf(g, "unmounted")).To(BeEmpty())
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
	Expect(nd.State.RestoreKernel()).To(Succeed())
}
