//go:build nodesuite

package node

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers"
)

// containerPID is the host PID of a running container's first process,
// from the node's containerd.
func containerPID(g Gomega, containerID string) int {
	id := strings.TrimPrefix(containerID, "containerd://")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := nd.Ctr(ctx, "tasks", "ls")
	g.Expect(err).NotTo(HaveOccurred())
	for line := range strings.SplitSeq(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid, err := strconv.Atoi(f[1])
			g.Expect(err).NotTo(HaveOccurred())
			return pid
		}
	}
	g.Expect(out).To(ContainSubstring(id), "no running task for container %s", id)
	return 0
}

// waitUploading waits for a CoreDump of app that is being uploaded now and
// not in skip, and returns its name.
func waitUploading(t *testing.T, app string, skip map[string]bool) string {
	t.Helper()
	var name string
	Eventually(func(g Gomega) {
		for _, cd := range dumpsOf(g, app) {
			if cd.Status.Phase == coredogv1.PhaseUploading && !skip[cd.Name] {
				name = cd.Name
				return
			}
		}
		g.Expect(name).NotTo(BeEmpty(), "no CoreDump of %s is uploading", app)
	}).WithTimeout(uploadTimeout).WithPolling(50 * time.Millisecond).Should(Succeed())
	return name
}

// Test6KillNineMidUpload kills the agent's container, then the manager
// leader's, with SIGKILL while a large core is being uploaded: the kubelet
// restarts each, and every dump ends Uploaded once, under one key.
func Test6KillNineMidUpload(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	ctx := context.Background()
	// 1 GiB cores, so that an upload lasts long enough to be interrupted.
	d := crasherDeployment("big", 1, []string{"--touch=1024"}, nil)
	Expect(nd.Client.Create(ctx, d)).To(Succeed())
	t.Cleanup(func() { _ = nd.Client.Delete(ctx, d) })

	restarts := func(g Gomega, pod *corev1.Pod) int32 {
		g.Expect(nd.Client.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())
		g.Expect(pod.Status.ContainerStatuses).To(HaveLen(1))
		return pod.Status.ContainerStatuses[0].RestartCount
	}

	// The agent.
	victims := map[string]bool{}
	first := waitUploading(t, "big", victims)
	victims[first] = true
	agent := waitAgentReady(t, pipeDir)
	before := restarts(Default, agent)
	pid := containerPID(Default, agent.Status.ContainerStatuses[0].ContainerID)
	Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
	t.Logf("killed the agent (pid %d) while %s was uploading", pid, first)
	Eventually(func(g Gomega) {
		g.Expect(restarts(g, agent)).To(BeNumerically(">", before))
		g.Expect(agent.Status.ContainerStatuses[0].Ready).To(BeTrue())
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())

	// The manager leader.
	second := waitUploading(t, "big", victims)
	victims[second] = true
	var lease coordinationv1.Lease
	Expect(nd.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: controllers.LeaderElectionID}, &lease)).To(Succeed())
	Expect(lease.Spec.HolderIdentity).NotTo(BeNil())
	leaderName, _, _ := strings.Cut(*lease.Spec.HolderIdentity, "_")
	var leader corev1.Pod
	Expect(nd.Client.Get(ctx, client.ObjectKey{Namespace: releaseNS, Name: leaderName}, &leader)).To(Succeed(), "leader %q", *lease.Spec.HolderIdentity)
	before = restarts(Default, &leader)
	pid = containerPID(Default, leader.Status.ContainerStatuses[0].ContainerID)
	Expect(syscall.Kill(pid, syscall.SIGKILL)).To(Succeed())
	t.Logf("killed the manager leader %s (pid %d) while %s was uploading", leaderName, pid, second)
	Eventually(func(g Gomega) {
		g.Expect(restarts(g, &leader)).To(BeNumerically(">", before))
	}).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())

	// Both dumps end Uploaded, each object stored once.
	Eventually(func(g Gomega) {
		for _, cd := range dumpsOf(g, "big") {
			if victims[cd.Name] {
				g.Expect(cd.Status.Phase).To(Equal(coredogv1.PhaseUploaded), describeDump(cd))
			}
		}
	}).WithTimeout(uploadTimeout).WithPolling(pollInterval).Should(Succeed())
	Expect(nd.Client.Delete(ctx, d)).To(Succeed())
	for _, cd := range dumpsOf(Default, "big") {
		if !victims[cd.Name] {
			continue
		}
		objs, err := s3c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(s3Bucket)})
		Expect(err).NotTo(HaveOccurred())
		// The dump itself, once; beside it its .json and, when the
		// container logged anything, its .log.
		var dumps, keys []string
		for _, o := range objs.Contents {
			key := aws.ToString(o.Key)
			if !strings.Contains(key, cd.Name) {
				continue
			}
			keys = append(keys, key)
			if !strings.HasSuffix(key, ".json") && !strings.HasSuffix(key, ".log") {
				dumps = append(dumps, key)
			}
		}
		Expect(dumps).To(HaveLen(1), "stored objects of %s: %q", cd.Name, keys)
		Expect(aws.ToString(objs.Contents[0].Key)).NotTo(BeEmpty())
		t.Logf("%s: Uploaded after %d attempts, %s", cd.Name, cd.Status.Attempts, fmt.Sprint(cd.Status.Storage.Key))
	}
	Eventually(func(g Gomega) { g.Expect(podsOf(g, "big")).To(BeEmpty()) }).WithTimeout(podTimeout).WithPolling(pollInterval).Should(Succeed())
}
