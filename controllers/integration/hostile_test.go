package integration

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
)

// TestForgedCoreDumpsAreNeverUploaded creates CoreDumps by hand, as someone
// with write access to CoreDumps (or a stolen agent token) could: one that
// names a file the agent never registered, one that copies a real dump's spec
// under another name, and one for a node without an agent. None may be
// uploaded; the real dump next to them is.
func TestForgedCoreDumpsAreNeverUploaded(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := newDumpEnv(t, "forged", nil)

	realName := e.crashFile("web-0", "server", coreLike(64<<10))
	var real *coredogv1.CoreDump
	g.Eventually(func(g Gomega) { real = e.dump(g, realName) }, timeout, interval).Should(Succeed())

	forge := func(name string, mutate func(*coredogv1.CoreDumpSpec)) *coredogv1.CoreDump {
		cd := &coredogv1.CoreDump{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace},
			Spec:       *real.Spec.DeepCopy(),
		}
		mutate(&cd.Spec)
		g.Expect(k8s.Create(ctx, cd)).To(Succeed())
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), cd) })
		return cd
	}
	neverSeen := forge("forged-never-seen", func(s *coredogv1.CoreDumpSpec) {
		s.FileName = "../../etc/shadow"
		s.FileIdentity = nil
	})
	copied := forge("forged-copy", func(*coredogv1.CoreDumpSpec) {})
	elsewhere := forge("forged-elsewhere", func(s *coredogv1.CoreDumpSpec) { s.NodeName = "node-without-agent" })

	cases := []struct {
		cd   *coredogv1.CoreDump
		want string
	}{
		{neverSeen, "the agent does not serve this dump"},
		{copied, "the agent does not serve this dump"},
		{elsewhere, "finding the agent of node node-without-agent"},
	}
	for _, tc := range cases {
		g.Eventually(func(g Gomega) {
			var got coredogv1.CoreDump
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(tc.cd), &got)).To(Succeed())
			g.Expect(got.Status.Reason).To(Equal("UploadRetrying"), "%s: %+v", tc.cd.Name, got.Status)
			g.Expect(got.Status.Message).To(ContainSubstring(tc.want), tc.cd.Name)
		}, 60*time.Second, interval).Should(Succeed())
	}
	e.waitPhase(g, realName, coredogv1.PhaseUploaded)

	// Still not uploaded, and nothing of theirs in the bucket.
	for _, tc := range cases {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(tc.cd), &got)).To(Succeed())
		g.Expect(got.Status.Phase).NotTo(Equal(coredogv1.PhaseUploaded), tc.cd.Name)
		g.Expect(got.Status.Storage == nil || got.Status.Storage.UploadedAt == nil).To(BeTrue(), tc.cd.Name)
	}
	g.Expect(filepath.WalkDir(e.store, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(e.store, path); strings.Contains(rel, "forged-") {
			t.Errorf("a forged dump reached the bucket: %s", path)
		}
		return nil
	})).To(Succeed())

	// Nor can a forged dump be pointed somewhere else later: the spec is
	// immutable, field by field.
	for _, mutate := range []func(*coredogv1.CoreDumpSpec){
		func(s *coredogv1.CoreDumpSpec) { s.NodeName = e.node },
		func(s *coredogv1.CoreDumpSpec) { s.FileName = "../../etc/shadow" },
		func(s *coredogv1.CoreDumpSpec) { s.PolicyName = "another" },
		func(s *coredogv1.CoreDumpSpec) { s.FileIdentity = &coredogv1.FileIdentity{Device: 1, Inode: 2} },
		func(s *coredogv1.CoreDumpSpec) { s.Size = 1 << 40 },
	} {
		// The manager writes the object's status meanwhile: a conflict is
		// a stale read, not an answer, and the update is tried again.
		var err error
		g.Eventually(func() bool {
			var cur coredogv1.CoreDump
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(elsewhere), &cur)).To(Succeed())
			mutate(&cur.Spec)
			err = k8s.Update(ctx, &cur)
			return apierrors.IsConflict(err)
		}, timeout, interval).Should(BeFalse())
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		g.Expect(err.Error()).To(ContainSubstring("CoreDump spec is immutable"))
	}
}

// TestHostileKeyTemplatesAreRefused applies key templates that try to climb
// out of the bucket prefix, write absolute keys or run the manager out of
// memory: each leaves the policy's storage invalid with a reason, and the API
// server refuses the ones that could run for ever before they are stored.
func TestHostileKeyTemplatesAreRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := newPolicy("hostile-keys", "/var/lib/cores-hostile-keys")
	createPolicy(t, p)
	for _, tc := range []struct{ tmpl, msg string }{
		{"../{{.Pod}}", ".. segment"},
		{"{{.Namespace}}/../../{{.Pod}}", ".. segment"},
		{"/etc/{{.Pod}}", "starts with /"},
		{"{{.Pod}}\n{{.Name}}", "control characters"},
		{`{{printf "%01000000d" 1}}`, "longer than 1024"},
		{`{{index .Pod 100000}}`, "index out of range"},
		{`{{.Pod.Secret}}`, "Secret"},
	} {
		g.Eventually(func() error {
			cur := getPolicy(g, p.Name)
			cur.Spec.Storage.KeyTemplate = tc.tmpl
			return k8s.Update(ctx, cur)
		}, timeout, interval).Should(Succeed(), tc.tmpl)
		g.Eventually(func(g Gomega) {
			got := getPolicy(g, p.Name)
			g.Expect(got.Status.ObservedGeneration).To(Equal(got.Generation))
			c := condition(got, coredogv1.ConditionStorageValid)
			g.Expect(c.Status).To(Equal(metav1.ConditionFalse), tc.tmpl)
			g.Expect(c.Reason).To(Equal(coredogv1.ReasonInvalidKeyTemplate), tc.tmpl)
			g.Expect(c.Message).To(ContainSubstring(tc.msg), tc.tmpl)
		}, timeout, interval).Should(Succeed())
	}

	for _, tmpl := range []string{
		"{{range 1000000000}}{{end}}{{.Name}}",
		"{{- range $i := 1000000000}}{{range 1000000000}}{{end}}{{end}}{{.Name}}",
		`{{define "k"}}{{template "k"}}{{end}}{{.Name}}`,
		`{{block "k" .}}{{.Name}}{{end}}`,
	} {
		cur := getPolicy(g, p.Name)
		cur.Spec.Storage.KeyTemplate = tmpl
		err := k8s.Update(ctx, cur)
		g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "%s: got %v", tmpl, err)
		g.Expect(err.Error()).To(ContainSubstring("keyTemplate must not use range, template, block"))
	}
}

// TestManagerTalksOnlyToAgentsOfThePolicysCA points an agent Lease, as a
// stolen agent token could, at an HTTPS server whose certificate carries the
// agent's name but comes from another CA: the manager must refuse the
// handshake before sending a request (so it can neither be fed a fake dump
// nor be used to send requests to other services), and never mark the dump
// Uploaded.
func TestManagerTalksOnlyToAgentsOfThePolicysCA(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := newPolicy("impostor", "/var/lib/cores-impostor")
	p.Spec.Storage.URL = "file://" + filepath.Join(t.TempDir(), "bucket")
	createPolicy(t, p)

	ca, err := pki.NewCA("coredog-impostor", time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	kp, err := ca.IssueServer([]string{pki.AgentServerName(p.Name)}, time.Now())
	g.Expect(err).NotTo(HaveOccurred())
	cert, err := tls.X509KeyPair(kp.CertPEM, kp.KeyPEM)
	g.Expect(err).NotTo(HaveOccurred())
	var requests atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		requests.Add(1)
		_, _ = w.Write([]byte("forged dump"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	node := "node-impostor"
	cd := dumpBehindLease(t, p.Name, node, node, srv.URL, "impostor-dump")

	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
		g.Expect(got.Status.Reason).To(Equal("UploadRetrying"), "%+v", got.Status)
		// The status says that the agent could not be reached, not why:
		// the endpoint is the Lease writer's choice, and the cause would
		// tell it which ports are open.
		g.Expect(got.Status.Message).To(ContainSubstring("could not be reached"))
		g.Expect(got.Status.Message).NotTo(ContainSubstring(srv.Listener.Addr().String()))
		g.Expect(got.Status.Message).NotTo(ContainSubstring("certificate"))
		g.Expect(got.Status.Attempts).To(BeNumerically(">=", 2))
	}, 60*time.Second, interval).Should(Succeed())
	var got coredogv1.CoreDump
	g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
	g.Expect(got.Status.Phase).NotTo(Equal(coredogv1.PhaseUploaded))
	g.Expect(requests.Load()).To(BeZero(), "requests the manager sent to a server of another CA")
}

// TestManagerUsesOnlyTheLeaseOfTheDumpsNode is the attack of node "b.c",
// whose agent may write the Lease "<policy>.a.b.c" (its own for a policy
// named "<policy>.a"), which is also the Lease of node "a.b.c": pointed at
// itself, it would be handed node a.b.c's dumps. The manager must use a
// Lease only when it is held in the name of the dump's node, and must not
// dial the endpoint otherwise.
func TestManagerUsesOnlyTheLeaseOfTheDumpsNode(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := newPolicy("suffix", "/var/lib/cores-suffix")
	p.Spec.Storage.URL = "file://" + filepath.Join(t.TempDir(), "bucket")
	createPolicy(t, p)

	srv, conns := countingTLSServer(t)

	cd := dumpBehindLease(t, p.Name, "a.b.c", "b.c", srv.URL, "suffix-dump")

	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
		g.Expect(got.Status.Reason).To(Equal(coredogv1.ReasonUploadRetrying), "%+v", got.Status)
		g.Expect(got.Status.Message).To(ContainSubstring("is not held by node a.b.c"))
		g.Expect(got.Status.Attempts).To(BeNumerically(">=", 2))
	}, 60*time.Second, interval).Should(Succeed())
	g.Expect(conns.Load()).To(BeZero(), "connections the manager opened to the endpoint of another node's Lease")
}

// dumpBehindLease creates the agent Lease of policy on node, held by holder
// and naming endpoint, and a CoreDump of that node, as an agent (or one
// posing as it) would; both go when the test ends.
func dumpBehindLease(t *testing.T, policy, node, holder, endpoint, dumpName string) *coredogv1.CoreDump {
	t.Helper()
	return dumpBehindLeaseWith(t, policy, node, holder, endpoint, validCoreDump(dumpName))
}

// dumpBehindLeaseWith is dumpBehindLease for a CoreDump the test made.
func dumpBehindLeaseWith(t *testing.T, policy, node, holder, endpoint string, cd *coredogv1.CoreDump) *coredogv1.CoreDump {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: agentlease.Name(policy, node), Namespace: testNamespace,
			Annotations: map[string]string{agentlease.AnnotationEndpoint: endpoint}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &holder, RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	g.Expect(k8s.Create(ctx, lease)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), lease) })
	cd.Namespace = testNamespace
	cd.Spec.PolicyName, cd.Spec.NodeName = policy, node
	g.Expect(k8s.Create(ctx, cd)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), cd) })
	return cd
}

// TestHugeClaimedSizesAreRefused is the attack of an agent that writes a
// CoreDump claiming an enormous size: sizes used to size the upload's
// buffers, and a claimed 1 PiB made the manager allocate a chunk of about
// 113 GB and crash, then the next leader too. The API refuses sizes over
// MaxDumpSize; a size it admits but no store is asked to take fails the
// dump at once, with the reason, and the manager goes on working.
func TestHugeClaimedSizesAreRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := newPolicy("huge", "/var/lib/cores-huge")
	p.Spec.Storage.URL = "s3://bucket/huge?region=eu-west-1"
	createPolicy(t, p)

	over := validCoreDump("huge-over-the-api")
	over.Namespace = testNamespace
	over.Spec.PolicyName, over.Spec.Size = p.Name, 1<<50
	err := k8s.Create(ctx, over)
	g.Expect(apierrors.IsInvalid(err)).To(BeTrue(), "a 1 PiB CoreDump was admitted: %v", err)

	srv, conns := countingTLSServer(t)
	cd := validCoreDump("huge-at-the-api-limit")
	cd.Spec.Size = coredogv1.MaxDumpSize
	cd = dumpBehindLeaseWith(t, p.Name, "node-huge", "node-huge", srv.URL, cd)

	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseFailed), "%+v", got.Status)
		g.Expect(got.Status.Reason).To(Equal(coredogv1.ReasonTooLarge))
		g.Expect(got.Status.Message).To(ContainSubstring("16Ti"))
	}, 30*time.Second, interval).Should(Succeed())
	g.Expect(conns.Load()).To(BeZero(), "the manager fetched a dump no store is asked to take")

	// The manager still works: another dump of the same policy is handled.
	next := validCoreDump("huge-next")
	next = dumpBehindLeaseWith(t, p.Name, "node-huge-2", "node-huge-2", srv.URL, next)
	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(next), &got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploading), "%+v", got.Status)
		g.Expect(got.Status.Attempts).To(BeNumerically(">=", 1))
	}, 30*time.Second, interval).Should(Succeed())
}

// countingTLSServer is an HTTPS server that answers nothing useful and
// counts the connections made to it, for tests that a manager dials nothing.
func countingTLSServer(t *testing.T) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	conns := new(atomic.Int32)
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, conns
}

// TestForgedCoreDumpCannotOverwriteOrDeleteAnotherDump points a forged
// CoreDump (as someone with write on CoreDumps and their status could) at
// the stored objects of a real dump: its key and URL in status.storage, as
// a key template that joined the name to fields a forger chooses could
// once render them. Its upload attempts must leave the objects alone and
// say why, and deleting it must not delete them: each object records its
// CoreDump's UID, which the manager compares before it replaces or deletes
// anything.
func TestForgedCoreDumpCannotOverwriteOrDeleteAnotherDump(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	e := newDumpEnv(t, "victim", nil)
	data := coreLike(64 << 10)
	realName := e.crashFile("web-0", "server", data)
	victim := e.waitPhase(g, realName, coredogv1.PhaseUploaded)
	stored := strings.TrimPrefix(victim.Status.Storage.URL, "file://")
	sidecar := strings.TrimSuffix(stored, ".zst") + ".json"
	before, err := os.ReadFile(stored)
	g.Expect(err).NotTo(HaveOccurred())
	beforeMeta, err := os.ReadFile(sidecar)
	g.Expect(err).NotTo(HaveOccurred())

	forged := &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: "forged-victim-key", Namespace: testNamespace},
		Spec:       *victim.Spec.DeepCopy(),
	}
	forged.Spec.FileName = "core.forged"
	g.Expect(k8s.Create(ctx, forged)).To(Succeed())
	// Once the manager gave it a key of its own, it is pointed at the victim's.
	g.Eventually(func(g Gomega) {
		var cur coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(forged), &cur)).To(Succeed())
		g.Expect(cur.Status.Phase).To(Equal(coredogv1.PhaseUploading))
		g.Expect(cur.Status.Storage).NotTo(BeNil())
		g.Expect(cur.Status.Storage.Key).NotTo(Equal(victim.Status.Storage.Key), "the forged dump got the victim's key by itself")
		cur.Status.Storage = victim.Status.Storage.DeepCopy()
		cur.Status.Storage.StoredSize, cur.Status.Storage.SHA256, cur.Status.Storage.UploadedAt = 0, "", nil
		g.Expect(k8s.Status().Update(ctx, &cur)).To(Succeed())
	}, timeout, interval).Should(Succeed())

	g.Eventually(func(g Gomega) {
		var cur coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(forged), &cur)).To(Succeed())
		g.Expect(cur.Status.Message).To(ContainSubstring("is not this dump's"), "%+v", cur.Status)
		g.Expect(cur.Status.Message).To(ContainSubstring("is left as it is"))
	}, 60*time.Second, interval).Should(Succeed())
	after, err := os.ReadFile(stored)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(after).To(Equal(before), "the forged dump's attempt changed the victim's object")

	// Deleting the forged dump leaves the victim's objects.
	g.Expect(k8s.Delete(ctx, forged)).To(Succeed())
	g.Eventually(func() bool {
		var cur coredogv1.CoreDump
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(forged), &cur))
	}, timeout, interval).Should(BeTrue(), "the forged dump's deletion should finish")
	after, err = os.ReadFile(stored)
	g.Expect(err).NotTo(HaveOccurred(), "deleting the forged dump deleted the victim's object")
	g.Expect(after).To(Equal(before))
	afterMeta, err := os.ReadFile(sidecar)
	g.Expect(err).NotTo(HaveOccurred(), "deleting the forged dump deleted the victim's metadata")
	g.Expect(afterMeta).To(Equal(beforeMeta))
	g.Expect(readStored(t, stored)).To(Equal(data))
	g.Eventually(func(g Gomega) {
		var evs eventsv1.EventList
		g.Expect(k8s.List(ctx, &evs, client.InNamespace(testNamespace))).To(Succeed())
		found := false
		for _, ev := range evs.Items {
			found = found || ev.Regarding.Name == forged.Name && ev.Reason == coredogv1.EventCleanupFailed && strings.Contains(ev.Note, "not this dump's")
		}
		g.Expect(found).To(BeTrue(), "no event says the objects were left")
	}, timeout, interval).Should(Succeed())

	// The victim's own deletion still removes them.
	g.Expect(k8s.Delete(ctx, victim)).To(Succeed())
	// The dump goes first, then its metadata: wait for both.
	for _, path := range []string{stored, sidecar} {
		g.Eventually(func() bool { _, err := os.Stat(path); return os.IsNotExist(err) }, timeout, interval).Should(BeTrue(), path)
	}
}
