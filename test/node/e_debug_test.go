//go:build nodesuite

package node

import (
	"context"
	"strconv"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Test7DebugRun runs `kubectl coredog debug --run` on an uploaded dump of
// the Pipe test's crasher: the debug pod runs on the node, with the dump
// inside it, byte for byte (its size checked in the pod).
func Test7DebugRun(t *testing.T) {
	RegisterTestingT(t)
	onFailure(t)
	ctx := context.Background()
	var cd *coredogv1.CoreDump
	for _, d := range dumpsOf(Default, "piped") {
		if d.Status.Phase == coredogv1.PhaseUploaded {
			cd = &d
			break
		}
	}
	Expect(cd).NotTo(BeNil(), "the Pipe test left no uploaded dump")
	// The crasher's image has no shell or sleep to idle with: the debug
	// pod runs the toolbox image instead.
	out, err := plugin(t, s3Env, "debug", cd.Name, "-n", releaseNS, "--run", "--image", toolboxImage, "--timeout", "3m")
	Expect(err).NotTo(HaveOccurred(), out)
	t.Logf("kubectl coredog debug --run:\n%s", out)
	var pods corev1.PodList
	Expect(nd.Client.List(ctx, &pods, client.InNamespace(workloadNS))).To(Succeed())
	var dbg *corev1.Pod
	for i, p := range pods.Items {
		if strings.HasPrefix(p.Name, "coredog-debug-") {
			dbg = &pods.Items[i]
		}
	}
	Expect(dbg).NotTo(BeNil(), "no debug pod in %s", workloadNS)
	Expect(dbg.Status.Phase).To(Equal(corev1.PodRunning))
	Expect(dbg.Spec.NodeName).To(Equal(NodeName))
	size := kubectl(t, "-n", workloadNS, "exec", dbg.Name, "--", "sh", "-c", "wc -c < /tmp/core")
	Expect(strings.TrimSpace(size)).To(Equal(strings.TrimSpace(itoa(cd.Spec.Size))))
	Expect(nd.Client.Delete(ctx, dbg)).To(Succeed())
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
