//go:build nodesuite

package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Generous waits: the machine is shared and slow; a wait ends as soon as
// its condition holds.
const (
	podTimeout     = 3 * time.Minute
	uploadTimeout  = 3 * time.Minute
	pollInterval   = 250 * time.Millisecond
	workloadNS     = "crashers"
	commandTimeout = 2 * time.Minute
)

// onFailure writes the node's state into the test log when t failed.
func onFailure(t *testing.T) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		t.Logf("node state after the failure:\n%s", nd.Diagnostics(ctx))
		for _, args := range [][]string{
			{"-n", releaseNS, "logs", "-l", "app.kubernetes.io/component=manager", "--tail=60", "--all-containers", "--prefix"},
			{"-n", releaseNS, "logs", "-l", "app.kubernetes.io/component=agent", "--tail=60", "--prefix"},
			{"-n", releaseNS, "get", "coredumps", "-o", "wide"},
			{"get", "cdp", "-o", "yaml"},
		} {
			out, err := nd.RunKubectl(ctx, nil, args...)
			t.Logf("kubectl %s:\n%s%v", strings.Join(args, " "), out, errOrEmpty(err))
		}
		for _, f := range []string{pipeDir + "/.coredog/receive.log"} {
			if b, err := os.ReadFile(f); err == nil {
				t.Logf("%s:\n%s", f, b)
			}
		}
		if cp, err := CorePattern(); err == nil {
			t.Logf("core_pattern now: %q", cp)
		}
	})
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// kubectl runs kubectl as the admin, failing the test on error.
func kubectl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	out, err := nd.RunKubectl(ctx, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// helm runs the helm binary, failing the test on error.
func helm(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	out, err := nd.Run(ctx, nil, bins.helm, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("helm %s took %s", args[0], time.Since(t0).Round(time.Millisecond))
	return out
}

// plugin runs kubectl-coredog with the given environment added.
func plugin(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for _, e := range env {
		k, v, _ := strings.Cut(e, "=")
		t.Setenv(k, v)
	}
	return nd.Run(ctx, nil, bins.plugin, args...)
}

// s3Env is the plugin's own storage credentials (the caller's, never the
// manager's Secret).
var s3Env = []string{"AWS_ACCESS_KEY_ID=" + s3AccessKey, "AWS_SECRET_ACCESS_KEY=" + s3SecretKey, "AWS_REGION=" + s3Region}

// crasherDeployment is a Deployment of the crasher image on the node.
func crasherDeployment(name string, replicas int32, args []string, mutate func(*corev1.PodSpec)) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: workloadNS},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					NodeName:                      "",
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{
						Name:            "app",
						Image:           crasherImage,
						ImagePullPolicy: corev1.PullNever,
						Args:            args,
					}},
				},
			},
		},
	}
	if mutate != nil {
		mutate(&d.Spec.Template.Spec)
	}
	return d
}

// ensureNamespace creates a namespace if it is missing.
func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := nd.Client.Create(context.Background(), ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatal(err)
	}
}

// podsOf lists the pods of a Deployment by its app label.
func podsOf(g Gomega, app string) []corev1.Pod {
	var pods corev1.PodList
	g.Expect(nd.Client.List(context.Background(), &pods, client.InNamespace(workloadNS), client.MatchingLabels{"app": app})).To(Succeed())
	return pods.Items
}

// crashes counts the container crashes of a Deployment's pods so far:
// each restart is one, and a container that is terminated now is one more.
func crashes(pods []corev1.Pod) int {
	n := 0
	for _, p := range pods {
		for _, cs := range p.Status.ContainerStatuses {
			// Every start before the current one crashed; so did the
			// current one when it is terminated, or waiting to restart.
			n += int(cs.RestartCount)
			if cs.State.Terminated != nil || cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil {
				n++
			}
		}
	}
	return n
}

// dumpsOf lists the CoreDumps attributed to the pods of a Deployment.
func dumpsOf(g Gomega, app string) []coredogv1.CoreDump {
	var list coredogv1.CoreDumpList
	g.Expect(nd.Client.List(context.Background(), &list, client.InNamespace(releaseNS))).To(Succeed())
	var out []coredogv1.CoreDump
	for _, cd := range list.Items {
		if p := cd.Status.Pod; p != nil && p.Namespace == workloadNS && p.WorkloadName == app {
			out = append(out, cd)
		}
	}
	return out
}

// allDumps lists every CoreDump.
func allDumps(g Gomega) []coredogv1.CoreDump {
	var list coredogv1.CoreDumpList
	g.Expect(nd.Client.List(context.Background(), &list, client.InNamespace(releaseNS))).To(Succeed())
	return list.Items
}

func fileSHA256(t *testing.T, path string) (string, int64) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// describeDump is a CoreDump in one line, for failure messages.
func describeDump(cd coredogv1.CoreDump) string {
	pod := "-"
	if p := cd.Status.Pod; p != nil {
		pod = fmt.Sprintf("%s/%s[%s] by %s", p.Namespace, p.Name, p.Container, p.ResolvedBy)
	}
	return fmt.Sprintf("%s %s %s/%s file=%s pod=%s", cd.Name, cd.Status.Phase, cd.Status.Reason, cd.Status.Message, cd.Spec.FileName, pod)
}
