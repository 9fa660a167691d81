package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
	"github.com/prometheus/client_golang/prometheus"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
)

// TestAgentOfOneNodeCannotAnswerForAnother is the attack of root on one
// node of a policy, which holds its agent's serving key and the certificate
// the manager issued for its node, and answers the manager's download of
// another node's dump: by DNS spoofing, by taking over the other node's pod
// IP, or because the other node's Lease names its address. Before agents had
// keys of their own, every agent of a policy held the one serving key, and
// the manager stored whatever such an agent sent. The attacker here is the
// agent's own serving code with a certificate the real manager issued
// through the node's Lease. The manager must refuse the handshake for the
// other node's dump (no request reaches the attacker, nothing is stored,
// the status names no address), and still take the attacker's own node's
// dump from the same server.
func TestAgentOfOneNodeCannotAnswerForAnother(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	// A real agent on its node, certified by the manager, whose dump is
	// stored: the per-node certificates work end to end.
	e := newDumpEnv(t, "nodeid", nil)
	data := coreLike(64 << 10)
	realName := e.crashFile("web-0", "server", data)
	real := e.waitPhase(g, realName, coredogv1.PhaseUploaded)

	// Root on node-evil makes its agent's key and has the manager certify
	// it, as its agent does.
	const evil, victim = "node-evil", "node-victim"
	id, err := serve.NewIdentity(e.policy.Name, evil)
	g.Expect(err).NotTo(HaveOccurred())
	tlsDir := t.TempDir()
	var caPEM []byte
	g.Eventually(func(g Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: agentset.AgentCASecretName(e.policy.Name)}, &s)).To(Succeed())
		caPEM = s.Data[pki.CACertKey]
		g.Expect(os.WriteFile(filepath.Join(tlsDir, pki.CACertKey), caPEM, 0o600)).To(Succeed())
	}, timeout, interval).Should(Succeed())

	// It serves forged bytes under the victim's dump name, and its own.
	forged := []byte(strings.Repeat("forged", len(data)/6+1))[:len(data)]
	reg := serve.NewRegistry()
	for _, name := range []string{"nodeid-victim-dump", "nodeid-evil-dump"} {
		path := filepath.Join(t.TempDir(), "core")
		g.Expect(os.WriteFile(path, forged, 0o600)).To(Succeed())
		var st syscall.Stat_t
		g.Expect(syscall.Stat(path, &st)).To(Succeed())
		reg.Add(serve.Entry{Name: name, Path: path, Device: uint64(st.Dev), Inode: st.Ino, Size: st.Size}) //nolint:unconvert
	}
	metrics := prometheus.NewRegistry()
	srv, err := serve.NewServer(serve.Options{Registry: reg, TLSDir: tlsDir, Identity: id, Metrics: metrics, Logger: testr.New(t).WithName("evil")}, "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	srvCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(srvCtx) }()
	t.Cleanup(func() { stop(); <-done })
	endpoint := "https://" + srv.Addr()

	evilLease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: agentlease.Name(e.policy.Name, evil), Namespace: testNamespace,
			Labels:      map[string]string{coredogv1.LabelPolicy: coredogv1.LabelValue(e.policy.Name), coredogv1.LabelNode: evil},
			Annotations: map[string]string{agentlease.AnnotationServingCSR: string(id.CSR()), agentlease.AnnotationEndpoint: endpoint}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: new(evil), RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	g.Expect(k8s.Create(ctx, evilLease)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), evilLease) })
	g.Eventually(func(g Gomega) {
		var l coordinationv1.Lease
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(evilLease), &l)).To(Succeed())
		cert := l.Annotations[agentlease.AnnotationServingCert]
		g.Expect(cert).NotTo(BeEmpty())
		_, err := id.Accept([]byte(cert), caPEM, time.Now())
		g.Expect(err).NotTo(HaveOccurred())
	}, timeout, interval).Should(Succeed())

	copyOf := func(name, node string) *coredogv1.CoreDump {
		cd := &coredogv1.CoreDump{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: *real.Spec.DeepCopy()}
		cd.Spec.NodeName = node
		return cd
	}
	// The victim's Lease (its agent's word) names the attacker's address.
	victimDump := dumpBehindLeaseWith(t, e.policy.Name, victim, victim, endpoint, copyOf("nodeid-victim-dump", victim))
	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(victimDump), &got)).To(Succeed())
		g.Expect(got.Status.Reason).To(Equal(coredogv1.ReasonUploadRetrying), "%+v", got.Status)
		g.Expect(got.Status.Message).To(ContainSubstring("could not be reached"))
		g.Expect(got.Status.Message).NotTo(ContainSubstring(srv.Addr()))
		g.Expect(got.Status.Message).NotTo(ContainSubstring("127.0.0.1"))
		g.Expect(got.Status.Attempts).To(BeNumerically(">=", 2))
	}, 60*time.Second, interval).Should(Succeed())
	g.Expect(servedRequests(t, metrics)).To(BeZero(), "requests the manager sent to another node's agent")

	// The attacker's own node's dump, from the same server, is taken: the
	// refusal above is the node's, nothing else.
	evilDump := copyOf("nodeid-evil-dump", evil)
	evilDump.Namespace = testNamespace
	g.Expect(k8s.Create(ctx, evilDump)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), evilDump) })
	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(evilDump), &got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploaded), "%+v", got.Status)
	}, 60*time.Second, interval).Should(Succeed())

	var got coredogv1.CoreDump
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(victimDump), &got)).To(Succeed())
	g.Expect(got.Status.Phase).NotTo(Equal(coredogv1.PhaseUploaded))
	g.Expect(got.Status.Storage == nil || got.Status.Storage.UploadedAt == nil).To(BeTrue())
	g.Expect(filepath.WalkDir(e.store, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(path, "nodeid-victim-dump") {
			t.Errorf("the victim's dump was stored from another node's agent: %s", path)
		}
		return nil
	})).To(Succeed())
}

// servedRequests sums coredog_agent_serve_requests_total for the dump routes.
func servedRequests(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, f := range families {
		if f.GetName() != "coredog_agent_serve_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}
