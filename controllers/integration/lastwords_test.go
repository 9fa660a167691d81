package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/lastwords"
)

// fakeKubelet answers the kubelet's containerLogs endpoint, which the API
// server calls for pods/log: envtest has no kubelet, but its API server
// proxies a log request to whatever the pod's Node says is its kubelet.
type fakeKubelet struct {
	srv  *httptest.Server
	body []byte
	mu   sync.Mutex
	reqs []*url.URL
}

func newFakeKubelet(t *testing.T, body []byte) *fakeKubelet {
	k := &fakeKubelet{body: body}
	k.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k.mu.Lock()
		k.reqs = append(k.reqs, r.URL)
		k.mu.Unlock()
		if !strings.HasPrefix(r.URL.Path, "/containerLogs/") {
			http.NotFound(w, r)
			return
		}
		// A hostile or broken kubelet: it sends everything, whatever
		// tailLines and limitBytes say.
		_, _ = w.Write(k.body)
	}))
	t.Cleanup(k.srv.Close)
	return k
}

func (k *fakeKubelet) requests() []*url.URL {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]*url.URL(nil), k.reqs...)
}

// createNode makes a Node whose kubelet is the fake one.
func createNode(t *testing.T, name string, kubelet *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	host, port, err := net.SplitHostPort(kubelet.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := k8s.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), node) })
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: host}}
	node.Status.DaemonEndpoints.KubeletEndpoint.Port = int32(p)
	if err := k8s.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
}

// TestCrashedContainersLogAndPodAreStoredBesideTheDump runs the whole
// path: a pod whose container was killed by SIGSEGV and restarted, a real
// agent, the real manager, the API server's pods/log proxied to a
// kubelet-like server. The run before the restart is read (previous=true)
// with the bounds asked for, the stored .log keeps at most 64 KiB of what a
// kubelet that ignores the bounds sends, and the .json keeps the pod with
// its env values redacted.
func TestCrashedContainersLogAndPodAreStoredBesideTheDump(t *testing.T) {
	g := NewWithT(t)
	var body strings.Builder
	for i := 0; body.Len() < 3*lastwords.MaxBytes; i++ {
		fmt.Fprintf(&body, "line %d of the crashed run\n", i)
	}
	body.WriteString("panic: runtime error: invalid memory address or nil pointer dereference\n")
	kubelet := newFakeKubelet(t, []byte(body.String()))

	e := newDumpEnv(t, "lastwords", nil)
	createNode(t, e.node, kubelet.srv)
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-0", Namespace: "shop", Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": `{"env":[{"name":"DB_PASSWORD","value":"hunter2-in-annotation"}]}`,
		}},
		Spec: corev1.PodSpec{NodeName: e.node, Containers: []corev1.Container{{
			Name: "app", Image: "registry.example/api:1",
			Args: []string{"--listen=:8080", "--db-password=hunter2-in-args"},
			Env: []corev1.EnvVar{
				{Name: "DB_PASSWORD", Value: "hunter2-in-env"},
				{Name: "API_TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "api-secrets"}, Key: "token"}}},
			},
		}}},
	}
	createNamespace(t, "shop")
	g.Expect(k8s.Create(ctx, pod)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pod) })
	now := metav1.Now()
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{
		Name: "app", Image: "registry.example/api:1", RestartCount: 1,
		ContainerID: "containerd://" + strings.Repeat("cd", 32),
		State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 139, Reason: "Error", FinishedAt: now, ContainerID: "containerd://" + strings.Repeat("ab", 32)}},
	}}
	g.Expect(k8s.Status().Update(ctx, pod)).To(Succeed())

	name := e.crashFile("api-0", "api", coreLike(64<<10))
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	g.Expect(cd.Status.Pod.Name).To(Equal("api-0"))

	reqs := kubelet.requests()
	g.Expect(reqs).NotTo(BeEmpty())
	q := reqs[0].Query()
	g.Expect(reqs[0].Path).To(Equal("/containerLogs/shop/api-0/app"))
	g.Expect(q.Get("previous")).To(Equal("true"))
	g.Expect(q.Get("tailLines")).To(Equal("200"))
	g.Expect(q.Get("limitBytes")).To(Equal("65536"))

	stored := strings.TrimSuffix(strings.TrimPrefix(cd.Status.Storage.URL, "file://"), ".zst")
	log, err := os.ReadFile(stored + ".log")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(log).To(HaveLen(lastwords.MaxBytes))
	g.Expect(string(log)).To(HavePrefix("line 0 of the crashed run\n"))

	meta, err := os.ReadFile(stored + ".json")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(meta)).NotTo(ContainSubstring("hunter2"))
	var doc struct {
		Pod       corev1.Pod        `json:"pod"`
		LastWords lastwords.LogInfo `json:"lastWords"`
	}
	g.Expect(json.Unmarshal(meta, &doc)).To(Succeed())
	g.Expect(doc.LastWords.Run).To(Equal(lastwords.RunPrevious))
	g.Expect(doc.LastWords.Bytes).To(Equal(lastwords.MaxBytes))
	g.Expect(doc.Pod.UID).To(Equal(pod.UID))
	c := doc.Pod.Spec.Containers[0]
	g.Expect(c.Env[0]).To(Equal(corev1.EnvVar{Name: "DB_PASSWORD", Value: lastwords.Redacted}))
	g.Expect(c.Env[1].ValueFrom.SecretKeyRef.Name).To(Equal("api-secrets"))
	g.Expect(c.Args).To(Equal([]string{"--listen=:8080", "--db-password=" + lastwords.Redacted}))
	g.Expect(doc.Pod.Status.ContainerStatuses[0].LastTerminationState.Terminated.ExitCode).To(Equal(int32(139)))

	// Deleting the CoreDump deletes the log with the dump.
	g.Expect(k8s.Delete(ctx, cd)).To(Succeed())
	g.Eventually(func() bool { _, err := os.Stat(stored + ".log"); return os.IsNotExist(err) }, timeout, interval).Should(BeTrue())
}

func createNamespace(t *testing.T, ns string) {
	t.Helper()
	var nsObj corev1.Namespace
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: ns}, &nsObj); err == nil {
		return
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
}
