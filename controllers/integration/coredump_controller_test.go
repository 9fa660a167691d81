package integration

import (
	"bytes"
	"context"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/klauspost/compress/zstd"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/internal/storage"
)

// dumpEnv is one policy with a real agent (in this process) on one node,
// storing into a file:// bucket.
type dumpEnv struct {
	t      *testing.T
	policy *coredogv1.CoreDumpPolicy
	node   string
	dir    string
	store  string
}

func newDumpEnv(t *testing.T, name string, mutate func(*coredogv1.CoreDumpPolicy)) *dumpEnv {
	t.Helper()
	return newDumpEnvWith(t, name, mutate, nil)
}

// newDumpEnvWith is newDumpEnv with the agent's configuration changed by
// agentCfg.
func newDumpEnvWith(t *testing.T, name string, mutate func(*coredogv1.CoreDumpPolicy), agentCfg func(*app.Config)) *dumpEnv {
	t.Helper()
	g := NewWithT(t)
	e := &dumpEnv{t: t, node: "node-" + name, dir: t.TempDir(), store: filepath.Join(t.TempDir(), name+"-bucket")}
	p := newPolicy(name, "/var/lib/cores-"+name)
	p.Spec.Storage.URL = "file://" + e.store
	p.Spec.NodeSelector = map[string]string{"dumps": name}
	if mutate != nil {
		mutate(p)
	}
	e.policy = createPolicy(t, p)

	// The agent mounts the Secret the policy reconciler made (the CA
	// certificate); the manager certifies its key through its Lease.
	tlsDir := t.TempDir()
	g.Eventually(func(g Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: agentset.AgentCASecretName(name)}, &s)).To(Succeed())
		g.Expect(os.WriteFile(filepath.Join(tlsDir, pki.CACertKey), s.Data[pki.CACertKey], 0o600)).To(Succeed())
	}, timeout, interval).Should(Succeed())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg := app.Config{
		NodeName: e.node, Policy: name, Namespace: testNamespace, Dir: e.dir,
		FileNamePattern: coredogv1.DefaultFileNamePattern, ProcRoot: "", Listen: "127.0.0.1:0", TLSDir: tlsDir,
		CorePattern: "Observe", MetricsAddr: "0", HealthAddr: "0", PollInterval: time.Second, SettleTime: 200 * time.Millisecond,
		MaxNodeUsage: "1Gi", MinNodeFree: "0%", MaxParallel: 4, LeaseRenew: time.Second,
	}
	if agentCfg != nil {
		agentCfg(&cfg)
	}
	go func() { done <- app.Run(ctx, cfg, restCfg, scheme.New(), testr.New(t).WithName("agent")) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop")
		}
	})
	return e
}

// crashFile drops a core-like file into the agent's directory under the
// default pattern's name.
func (e *dumpEnv) crashFile(hostname, exe string, data []byte) string {
	e.t.Helper()
	p, _ := corefile.ParsePattern(coredogv1.DefaultFileNamePattern)
	name := p.Render(corefile.NameFields{Hostname: hostname, Executable: exe, HostPID: int64(1000 + len(data)%5000), Signal: 11, Time: time.Now()})
	tmp := filepath.Join(e.dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(e.dir, name)); err != nil {
		e.t.Fatal(err)
	}
	return name
}

func (e *dumpEnv) dump(g Gomega, fileName string) *coredogv1.CoreDump {
	var list coredogv1.CoreDumpList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(testNamespace))).To(Succeed())
	for i := range list.Items {
		if list.Items[i].Spec.FileName == fileName && list.Items[i].Spec.PolicyName == e.policy.Name {
			return &list.Items[i]
		}
	}
	g.Expect(fileName).To(Equal("a CoreDump"), "no CoreDump for %s", fileName)
	return nil
}

func (e *dumpEnv) waitPhase(g Gomega, fileName string, phase coredogv1.Phase) *coredogv1.CoreDump {
	var cd *coredogv1.CoreDump
	g.Eventually(func(g Gomega) {
		cd = e.dump(g, fileName)
		g.Expect(cd.Status.Phase).To(Equal(phase), "status: %+v", cd.Status)
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	return cd
}

// createPod makes a running pod on node with one container, as a kubelet would report it.
func createPod(t *testing.T, ns, name, node string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	var nsObj corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: ns}, &nsObj); err != nil {
		nsObj = corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"team": ns}}}
		if err := k8s.Create(ctx, &nsObj); err != nil {
			t.Fatal(err)
		}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example/crashy:1"}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "registry.example/crashy:1",
		ImageID: "registry.example/crashy@sha256:0123", ContainerID: "containerd://" + strings.Repeat("ab", 32), Ready: true}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pod) })
	return pod
}

func coreLike(n int) []byte {
	b := make([]byte, n)
	copy(b, "\x7fELF-but-not-really ")
	for i := 4096; i < n; i += 4096 {
		b[i] = byte(i / 4096)
	}
	return b
}

func readStored(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(d); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestDumpIsResolvedUploadedAndAnnounced(t *testing.T) {
	g := NewWithT(t)
	e := newDumpEnv(t, "upload", nil)
	pod := createPod(t, "shop", "web-0", e.node)
	data := coreLike(3 << 20)
	name := e.crashFile("web-0", "crashy", data)

	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	ref := cd.Status.Pod
	g.Expect(ref.Namespace).To(Equal("shop"))
	g.Expect(ref.Name).To(Equal("web-0"))
	g.Expect(ref.UID).To(Equal(string(pod.UID)))
	g.Expect(ref.Container).To(Equal("app"))
	g.Expect(ref.Image).To(Equal("registry.example/crashy:1"))
	g.Expect(ref.ResolvedBy).To(Equal(coredogv1.ResolvedByHostname))
	g.Expect(ref.WorkloadKind).To(Equal("Pod"))
	g.Expect(cd.Labels).To(HaveKeyWithValue(coredogv1.LabelPod, "web-0"))
	g.Expect(cd.Labels).To(HaveKeyWithValue(coredogv1.LabelNamespace, "shop"))
	g.Expect(cd.Labels).To(HaveKeyWithValue(coredogv1.LabelSignal, "SIGSEGV"))
	g.Expect(cd.Labels).To(HaveKeyWithValue(coredogv1.LabelNode, e.node))
	g.Expect(cd.Annotations).To(HaveKeyWithValue(coredogv1.AnnotationPodUID, string(pod.UID)))
	g.Expect(cd.Finalizers).To(ContainElement(coredogv1.FinalizerCleanup))
	st := cd.Status.Storage
	g.Expect(st.URL).To(HavePrefix("file://" + e.store + "/shop/web-0/"))
	g.Expect(st.URL).To(HaveSuffix("-crashy-SIGSEGV/" + cd.Name + ".zst"))
	g.Expect(st.SHA256).To(HaveLen(64))
	g.Expect(st.StoredSize).To(BeNumerically(">", 0))
	g.Expect(st.StoredSize).To(BeNumerically("<", len(data)/4))

	// The stored object decompresses to the bytes that were on the node, and its metadata sits beside it.
	stored := strings.TrimPrefix(st.URL, "file://")
	g.Expect(readStored(t, stored)).To(Equal(data))
	meta, err := os.ReadFile(strings.TrimSuffix(stored, ".zst") + ".json")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(meta)).To(ContainSubstring(`"phase": "Uploaded"`))
	g.Expect(string(meta)).To(ContainSubstring(cd.Name))

	// The agent let go of the node's copy.
	g.Eventually(func() bool { _, err := os.Stat(filepath.Join(e.dir, name)); return os.IsNotExist(err) }, timeout, interval).Should(BeTrue())

	// People are told, on the pod.
	g.Eventually(func(g Gomega) {
		var evs eventsv1.EventList
		g.Expect(k8s.List(context.Background(), &evs, client.InNamespace("shop"))).To(Succeed())
		var found *eventsv1.Event
		for i := range evs.Items {
			if evs.Items[i].Reason == "CoreDumped" && evs.Items[i].Regarding.Name == "web-0" {
				found = &evs.Items[i]
			}
		}
		g.Expect(found).NotTo(BeNil())
		g.Expect(found.Related).NotTo(BeNil())
		g.Expect(found.Related.Name).To(Equal(cd.Name))
		g.Expect(found.Note).To(ContainSubstring("SIGSEGV"))
		g.Expect(found.Note).To(ContainSubstring(st.URL))
	}, timeout, interval).Should(Succeed())

	// The policy counts it.
	g.Eventually(func(g Gomega) {
		got := getPolicy(g, e.policy.Name)
		g.Expect(got.Status.Dumps.Uploaded).To(BeNumerically(">=", 1))
	}, timeout, interval).Should(Succeed())

	// Deleting the CoreDump by hand deletes the stored objects first.
	g.Expect(k8s.Delete(context.Background(), cd)).To(Succeed())
	g.Eventually(func() bool { _, err := os.Stat(stored); return os.IsNotExist(err) }, timeout, interval).Should(BeTrue())
	_, err = os.Stat(strings.TrimSuffix(stored, ".zst") + ".json")
	g.Expect(os.IsNotExist(err)).To(BeTrue())
}

func TestSameNamedPodsInTwoNamespacesAreNotGuessed(t *testing.T) {
	g := NewWithT(t)
	e := newDumpEnv(t, "twins", nil)
	createPod(t, "team-a", "db-0", e.node)
	createPod(t, "team-b", "db-0", e.node)
	name := e.crashFile("db-0", "postgres", coreLike(64<<10))
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	g.Expect(cd.Status.Pod.ResolvedBy).To(Equal(coredogv1.ResolvedByUnresolved))
	g.Expect(cd.Status.Pod.Name).To(BeEmpty())
	c := findCondition(cd.Status.Conditions, coredogv1.ConditionPodResolved)
	g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
	g.Expect(c.Message).To(And(ContainSubstring("team-a/db-0"), ContainSubstring("team-b/db-0")))
	g.Expect(cd.Labels).NotTo(HaveKey(coredogv1.LabelPod))
}

func TestPolicyFiltersSkipDumps(t *testing.T) {
	g := NewWithT(t)
	e := newDumpEnv(t, "filters", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Selector.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}
		p.Spec.Limits.MaxDumpSize = new(resource.MustParse("1Mi"))
		p.Spec.Limits.RateLimit.Count = ptr.To[int32](1)
	})
	createPod(t, "payments", "api-0", e.node)
	createPod(t, "marketing", "site-0", e.node)

	notSelected := e.crashFile("site-0", "site", coreLike(32<<10))
	cd := e.waitPhase(g, notSelected, coredogv1.PhaseSkipped)
	g.Expect(cd.Status.Reason).To(Equal(coredogv1.ReasonNotSelected))
	g.Expect(cd.Status.Message).To(ContainSubstring("marketing"))

	tooLarge := e.crashFile("api-0", "api", coreLike(2<<20))
	cd = e.waitPhase(g, tooLarge, coredogv1.PhaseSkipped)
	g.Expect(cd.Status.Reason).To(Equal(coredogv1.ReasonTooLarge))

	first := e.crashFile("api-0", "api", coreLike(40<<10))
	firstDump := e.waitPhase(g, first, coredogv1.PhaseUploaded)
	second := e.crashFile("api-0", "api", coreLike(41<<10))
	cd = e.waitPhase(g, second, coredogv1.PhaseSkipped)
	g.Expect(cd.Status.Reason).To(Equal(coredogv1.ReasonThrottled))
	g.Eventually(func(g Gomega) {
		var evs eventsv1.EventList
		g.Expect(k8s.List(context.Background(), &evs, client.InNamespace(testNamespace))).To(Succeed())
		found := false
		for _, ev := range evs.Items {
			found = found || (ev.Reason == "Throttled" && ev.Regarding.Name == cd.Name && ev.Type == corev1.EventTypeWarning)
		}
		g.Expect(found).To(BeTrue())
	}, timeout, interval).Should(Succeed())
	// Skipped dumps leave the node too.
	for _, n := range []string{notSelected, tooLarge, second} {
		g.Eventually(func() bool { _, err := os.Stat(filepath.Join(e.dir, n)); return os.IsNotExist(err) }, timeout, interval).Should(BeTrue(), n)
	}
	g.Eventually(func(g Gomega) {
		d := getPolicy(g, e.policy.Name).Status.Dumps
		g.Expect(d.Skipped).To(Equal(int64(3)))
		g.Expect(d.Uploaded).To(Equal(int64(1)))
	}, timeout, interval).Should(Succeed())

	// Crashes an agent counted on a dump (its series, once its creation
	// budget was spent) are counted on the policy too.
	var up coredogv1.CoreDump
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: firstDump.Name}, &up)).To(Succeed())
	patch := client.MergeFrom(up.DeepCopy())
	now := metav1.Now()
	up.Series = &coredogv1.CoreDumpSeries{Count: 4, OtherCount: 2, FirstObserved: now, LastObserved: now}
	g.Expect(k8s.Patch(context.Background(), &up, patch)).To(Succeed())
	g.Eventually(func(g Gomega) {
		g.Expect(getPolicy(g, e.policy.Name).Status.Dumps.Counted).To(Equal(int64(6)))
	}, timeout, interval).Should(Succeed())
}

func TestStorageFailuresAreRetriedUntilUploadedOnce(t *testing.T) {
	g := NewWithT(t)
	failWrites.Store(3)
	t.Cleanup(func() { failWrites.Store(0) })
	e := newDumpEnv(t, "flaky", nil)
	name := e.crashFile("batch-0", "batch", coreLike(256<<10))
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	g.Expect(cd.Status.Attempts).To(BeNumerically(">=", 2))
	g.Expect(failWrites.Load()).To(BeNumerically("<=", 0))
	// Three failures in a row are worth a Warning on the CoreDump, once,
	// although the dump was stored in the end.
	g.Eventually(func(g Gomega) {
		var evs eventsv1.EventList
		g.Expect(k8s.List(context.Background(), &evs, client.InNamespace(testNamespace))).To(Succeed())
		var warnings []string
		for _, ev := range evs.Items {
			if ev.Reason == coredogv1.EventUploadRetrying && ev.Regarding.Name == cd.Name {
				g.Expect(ev.Type).To(Equal(corev1.EventTypeWarning))
				g.Expect(ev.Note).To(And(ContainSubstring("failed 3 times"), ContainSubstring("injected by the test")))
				warnings = append(warnings, ev.Note)
			}
		}
		g.Expect(warnings).To(HaveLen(1))
	}, timeout, interval).Should(Succeed())
	// One dump, one object (and its metadata).
	var objects []string
	_ = filepath.Walk(e.store, func(p string, info os.FileInfo, err error) error {
		// fileblob keeps each object's attributes in a .attrs file beside it.
		if err == nil && !info.IsDir() && !strings.HasSuffix(p, ".attrs") {
			objects = append(objects, p)
		}
		return nil
	})
	g.Expect(objects).To(HaveLen(2), "objects: %v", objects)
}

func TestRetentionDeletesStoredDumpAndCoreDump(t *testing.T) {
	g := NewWithT(t)
	e := newDumpEnv(t, "ttl", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Retention.TTL = &metav1.Duration{Duration: 8 * time.Second}
	})
	name := e.crashFile("cron-0", "job", coreLike(16<<10))
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	stored := strings.TrimPrefix(cd.Status.Storage.URL, "file://")
	_, err := os.Stat(stored)
	g.Expect(err).NotTo(HaveOccurred())
	g.Eventually(func() bool {
		var got coredogv1.CoreDump
		return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(cd), &got))
	}, 30*time.Second, 200*time.Millisecond).Should(BeTrue())
	_, err = os.Stat(stored)
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the stored dump must go with the CoreDump")
}

// TestSkippedDumpsGoAfterTheirShortTTL: a dump that was not stored is a
// record of a crash, not a dump anyone can open; it goes after skippedTTL
// while a stored dump of the same policy stays for ttl.
func TestSkippedDumpsGoAfterTheirShortTTL(t *testing.T) {
	g := NewWithT(t)
	e := newDumpEnv(t, "skipttl", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Selector.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "payments"}}
		p.Spec.Retention.SkippedTTL = &metav1.Duration{Duration: 4 * time.Second}
	})
	createPod(t, "payments", "ledger-0", e.node)
	createPod(t, "marketing", "blog-0", e.node)
	stored := e.waitPhase(g, e.crashFile("ledger-0", "ledger", coreLike(16<<10)), coredogv1.PhaseUploaded)
	skipped := e.waitPhase(g, e.crashFile("blog-0", "blog", coreLike(16<<10)), coredogv1.PhaseSkipped)
	g.Eventually(func() bool {
		var got coredogv1.CoreDump
		return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(skipped), &got))
	}, 30*time.Second, 200*time.Millisecond).Should(BeTrue(), "the Skipped dump outlived its skippedTTL")
	g.Expect(time.Since(skipped.CreationTimestamp.Time)).To(BeNumerically(">=", 4*time.Second), "deleted before its skippedTTL")
	var got coredogv1.CoreDump
	g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(stored), &got)).To(Succeed(), "the stored dump went with the skipped one")
}

func TestCoreDumpForANodeWithoutAgentSaysSo(t *testing.T) {
	g := NewWithT(t)
	p := createPolicy(t, newPolicy("orphan", "/var/lib/cores-orphan"))
	cd := validCoreDump("orphan-dump")
	cd.Namespace = testNamespace
	cd.Spec.PolicyName = p.Name
	cd.Spec.NodeName = "node-without-agent"
	g.Expect(k8s.Create(context.Background(), cd)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), cd) })
	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(cd), &got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploading))
		g.Expect(got.Status.Reason).To(Equal("UploadRetrying"))
		g.Expect(got.Status.Message).To(ContainSubstring("finding the agent of node node-without-agent"))
		g.Expect(got.Status.NextAttemptAt).NotTo(BeNil(), "the backoff is kept in the status")
	}, timeout, interval).Should(Succeed())

	// The backoff lives in the status, not in one manager's memory: a next
	// attempt set far ahead (as a previous leader would have) holds.
	var got coredogv1.CoreDump
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(cd), &got)).To(Succeed())
		got.Status.NextAttemptAt = &metav1.Time{Time: time.Now().Add(time.Hour)}
		g.Expect(k8s.Status().Update(context.Background(), &got)).To(Succeed())
	}, timeout, interval).Should(Succeed())
	attempts := got.Status.Attempts
	g.Consistently(func(g Gomega) {
		var now coredogv1.CoreDump
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(cd), &now)).To(Succeed())
		g.Expect(now.Status.Attempts).To(Equal(attempts), "an attempt was made before status.nextAttemptAt")
	}, 4*time.Second, interval).Should(Succeed())
}

func findCondition(cs []metav1.Condition, typ string) metav1.Condition {
	for _, c := range cs {
		if c.Type == typ {
			return c
		}
	}
	return metav1.Condition{}
}

// failWrites makes the next N dump writes to a bucket whose path contains
// "flaky" fail, as a store that is away for a while would.
var failWrites atomic.Int32

// TestDumpIsUploadedToS3 runs the same flow against a real S3 protocol
// server on loopback, reached by the real AWS SDK client with the
// credentials from the policy's Secret.
func TestDumpIsUploadedToS3(t *testing.T) {
	g := NewWithT(t)
	backend := s3mem.New()
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	srv := httptest.NewServer(faker.Server())
	t.Cleanup(srv.Close)
	g.Expect(backend.CreateBucket("cores")).To(Succeed())
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-upload", Namespace: testNamespace},
		StringData: map[string]string{storage.KeyAWSAccessKeyID: "test-key", storage.KeyAWSSecretAccessKey: "test-secret"}}
	g.Expect(k8s.Create(context.Background(), secret)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), secret) })

	url := "s3://cores/prod?region=us-east-1&use_path_style=true&endpoint=" + srv.URL
	e := newDumpEnv(t, "s3", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Storage.URL = url
		p.Spec.Storage.SecretRef = &coredogv1.SecretReference{Name: secret.Name}
	})
	createPod(t, "shop-s3", "cart-0", e.node)
	data := coreLike(12 << 20)
	name := e.crashFile("cart-0", "cart", data)
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	g.Expect(cd.Status.Storage.URL).To(HavePrefix("s3://cores/prod/shop-s3/cart-0/"))
	g.Expect(cd.Status.Storage.Key).To(HavePrefix("prod/shop-s3/cart-0/"))

	loc, err := storage.ParseURL(url)
	g.Expect(err).NotTo(HaveOccurred())
	store, err := storage.Open(context.Background(), loc, map[string][]byte{
		storage.KeyAWSAccessKeyID: []byte("test-key"), storage.KeyAWSSecretAccessKey: []byte("test-secret")})
	g.Expect(err).NotTo(HaveOccurred())
	defer store.Close()
	key := strings.TrimPrefix(cd.Status.Storage.Key, loc.Prefix)
	r, err := store.Read(context.Background(), key)
	g.Expect(err).NotTo(HaveOccurred())
	defer r.Close()
	dec, err := zstd.NewReader(r)
	g.Expect(err).NotTo(HaveOccurred())
	defer dec.Close()
	var got bytes.Buffer
	_, err = got.ReadFrom(dec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(got.Bytes()).To(Equal(data))
	_, err = store.Size(context.Background(), strings.TrimSuffix(key, ".zst")+".json")
	g.Expect(err).NotTo(HaveOccurred())
}
