package app_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/klauspost/compress/zstd"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/detect"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/test/testcrash"
)

// These tests run the whole agent, as the binary does, against a real
// kube-apiserver and etcd, with real files, a real crash and real mTLS.

const ns = "coredog-system"

var (
	restCfg *rest.Config
	k8s     client.Client
	// crasher is built once; each test crashes it afresh.
	crasher string
)

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the suite with `make test`, which builds the envtest binaries (hack/envtest.sh)")
		return 1
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	restCfg = cfg
	if k8s, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	buildDir, err := os.MkdirTemp("", "coredog-crasher-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(buildDir)
	if crasher, err = testcrash.Build(buildDir, "crashy"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

// harness is one agent process's worth of state.
type harness struct {
	t       *testing.T
	tb      testing.TB
	cfg     app.Config
	dir     string
	proc    string
	tlsDir  string
	ca      *pki.CA
	client  *http.Client
	cancel  context.CancelFunc
	done    chan error
	started bool
	// unsigned leaves the agent's certificate request unanswered.
	unsigned bool
}

var policyCounter int

func newHarness(t *testing.T, mutate func(*app.Config)) *harness {
	t.Helper()
	return newHarnessTB(t, t, mutate)
}

// newBenchHarness is newHarness for benchmarks.
func newBenchHarness(b *testing.B, mutate func(*app.Config)) *harness {
	b.Helper()
	return newHarnessTB(b, nil, mutate)
}

func newHarnessTB(tb testing.TB, t *testing.T, mutate func(*app.Config)) *harness {
	policyCounter++
	h := &harness{t: t, tb: tb, dir: tb.TempDir(), proc: tb.TempDir(), tlsDir: tb.TempDir()}
	policy := fmt.Sprintf("p%d", policyCounter)
	h.cfg = app.Config{
		NodeName: "node-" + policy, Policy: policy, Namespace: ns,
		Dir: h.dir, FileNamePattern: coredogv1.DefaultFileNamePattern, ProcRoot: h.proc,
		Listen: "127.0.0.1:0", TLSDir: h.tlsDir, CorePattern: "Observe",
		MetricsAddr: "0", HealthAddr: "0",
		PollInterval: 500 * time.Millisecond, SettleTime: 300 * time.Millisecond,
		MaxNodeUsage: "10Gi", MinNodeFree: "0%", MaxParallel: 4, LeaseRenew: time.Second,
		// Every file of these tests becomes a CoreDump; the creation
		// budget's own tests set it.
		NodeBurst: 100000, SignatureBurst: 100000,
	}
	if mutate != nil {
		mutate(&h.cfg)
	}
	h.writeTLS()
	return h
}

// writeTLS lays out what the policy reconciler's Secret would hold (the CA
// certificate), and makes a client with the controller's certificate that
// verifies the agent as the controller does.
func (h *harness) writeTLS() {
	now := time.Now()
	ca, err := pki.NewCA("test", now)
	must(h.tb, err)
	h.ca = ca
	clientKP, err := ca.IssueClient(pki.ControllerCommonName, now)
	must(h.tb, err)
	must(h.tb, os.WriteFile(filepath.Join(h.tlsDir, pki.CACertKey), ca.CertPEM, 0o600))
	pair, err := tls.X509KeyPair(clientKP.CertPEM, clientKP.KeyPEM)
	must(h.tb, err)
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(ca.CertPEM)
	h.client = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: pki.AgentClientConfig(roots, pair, h.cfg.Policy, h.cfg.NodeName),
	}}
}

// signLeases does the manager's part for the harness's agent until ctx is
// done: it signs the certificate request in the agent's Lease, with the
// code the manager signs with, and puts the certificate into the Lease.
func (h *harness) signLeases(ctx context.Context) {
	name := agentlease.Name(h.cfg.Policy, h.cfg.NodeName)
	for ctx.Err() == nil {
		var lease coordinationv1.Lease
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &lease); err == nil {
			csr := []byte(lease.Annotations[agentlease.AnnotationServingCSR])
			if pub, err := pki.CheckAgentCSR(csr); err == nil {
				now := time.Now()
				if renew, _ := pki.AgentCertNeedsRenewal([]byte(lease.Annotations[agentlease.AnnotationServingCert]), h.ca.Cert, pub, h.cfg.Policy, h.cfg.NodeName, now); renew {
					if certPEM, err := h.ca.SignAgentCSR(csr, h.cfg.Policy, h.cfg.NodeName, now); err == nil {
						patch := client.MergeFromWithOptions(lease.DeepCopy(), client.MergeFromWithOptimisticLock{})
						lease.Annotations[agentlease.AnnotationServingCert] = string(certPEM)
						_ = k8s.Patch(ctx, &lease, patch)
					}
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (h *harness) start() { h.startWith(restCfg) }

// startBench runs the agent for a benchmark, with its logs discarded.
func (h *harness) startBench(b *testing.B) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done, h.started = cancel, make(chan error, 1), true
	go h.signLeases(ctx)
	go func(c app.Config) { h.done <- app.Run(ctx, c, restCfg, scheme.New(), logr.Discard()) }(h.cfg)
	b.Cleanup(func() {
		h.started = false
		cancel()
		if err := <-h.done; err != nil {
			b.Errorf("agent returned %v", err)
		}
	})
}

// startWith runs the agent against the API server at cfg.
func (h *harness) startWith(cfg *rest.Config) {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done, h.started = cancel, make(chan error, 1), true
	log := testr.NewWithOptions(h.t, testr.Options{Verbosity: 0})
	if !h.unsigned {
		go h.signLeases(ctx)
	}
	go func(c app.Config, log logr.Logger) { h.done <- app.Run(ctx, c, cfg, scheme.New(), log) }(h.cfg, log)
	h.t.Cleanup(h.stop)
}

func (h *harness) stop() {
	if !h.started {
		return
	}
	h.started = false
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("agent returned %v", err)
		}
	case <-time.After(30 * time.Second):
		h.t.Error("agent did not stop within 30s")
	}
}

// crash makes a real core and moves it into the watched directory under the
// name the kernel would give it with the default pattern.
func (h *harness) crash(hostname string) (string, testcrash.Crash) {
	h.t.Helper()
	stage := h.t.TempDir()
	c, err := testcrash.Run(crasher, stage, h.t.Logf)
	must(h.t, err)
	p, _ := corefile.ParsePattern(h.cfg.FileNamePattern)
	name := p.Render(corefile.NameFields{Hostname: hostname, Executable: "crashy", HostPID: int64(c.PID), Signal: 11, Time: time.Unix(1767225600, 0)})
	must(h.t, os.Rename(c.Core, filepath.Join(h.dir, name)))
	return name, c
}

func (h *harness) dumps(g Gomega) []coredogv1.CoreDump {
	var list coredogv1.CoreDumpList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var out []coredogv1.CoreDump
	for _, cd := range list.Items {
		if cd.Spec.PolicyName == h.cfg.Policy {
			out = append(out, cd)
		}
	}
	return out
}

func (h *harness) dumpFor(g Gomega, fileName string) *coredogv1.CoreDump {
	for _, cd := range h.dumps(g) {
		if cd.Spec.FileName == fileName {
			return &cd
		}
	}
	g.Expect(fileName).To(Equal("a CoreDump"), "no CoreDump for %s", fileName)
	return nil
}

// endpoint is the agent's endpoint from its Lease, once it is there: the
// agent publishes it when it holds the certificate signLeases issued.
func (h *harness) endpoint(g Gomega) string {
	var ep string
	g.Eventually(func(g Gomega) {
		var lease coordinationv1.Lease
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: agentlease.Name(h.cfg.Policy, h.cfg.NodeName)}, &lease)).To(Succeed())
		ep = lease.Annotations[agentlease.AnnotationEndpoint]
		_, err := agentlease.ParseEndpoint(ep)
		g.Expect(err).NotTo(HaveOccurred())
	}, 30*time.Second, 50*time.Millisecond).Should(Succeed())
	return ep
}

// download fetches a dump as the controller would and returns the raw bytes
// and the trailers' claims.
func (h *harness) download(g Gomega, name string) (int, []byte, http.Header) {
	resp, err := h.client.Get(h.endpoint(g) + "/v1/dumps/" + name + "?compression=zstd")
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, nil
	}
	dec, err := zstd.NewReader(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	defer dec.Close()
	raw, err := io.ReadAll(dec)
	g.Expect(err).NotTo(HaveOccurred())
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, raw, resp.Trailer
}

func setPhase(g Gomega, cd *coredogv1.CoreDump, phase coredogv1.Phase) {
	g.Eventually(func() error {
		var cur coredogv1.CoreDump
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(cd), &cur); err != nil {
			return err
		}
		cur.Status.Phase = phase
		return k8s.Status().Update(context.Background(), &cur)
	}, 10*time.Second, 100*time.Millisecond).Should(Succeed())
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

const wait = 20 * time.Second

func TestRealCrashBecomesCoreDumpAndIsServedThenReleased(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, nil)
	h.start()
	name, c := h.crash("web-0")
	raw, err := os.ReadFile(filepath.Join(h.dir, name))
	must(t, err)

	var cd *coredogv1.CoreDump
	g.Eventually(func(g Gomega) { cd = h.dumpFor(g, name) }, wait, 100*time.Millisecond).Should(Succeed())
	s := cd.Spec
	g.Expect(s.NodeName).To(Equal(h.cfg.NodeName))
	g.Expect(s.Size).To(Equal(int64(len(raw))))
	g.Expect(s.DisplaySize).To(Equal(coredogv1.DisplaySize(int64(len(raw)))))
	g.Expect(s.DetectedBy).To(BeElementOf(coredogv1.DetectedByWatch, coredogv1.DetectedByRescan))
	g.Expect(s.Process.Hostname).To(Equal("web-0"))
	g.Expect(s.Process.HostPID).To(Equal(int64(c.PID)))
	g.Expect(s.Process.PID).To(Equal(int64(c.PID)))
	g.Expect(s.Process.Executable).To(Equal("crashy"))
	g.Expect(s.Process.Signal).To(Equal(int32(11)))
	g.Expect(s.Process.SignalName).To(Equal("SIGSEGV"))
	g.Expect(s.Process.DumpedAt.Unix()).To(Equal(int64(1767225600)))
	g.Expect(s.Process.DumpMode).To(Equal(coredogv1.DumpModeUser), "root's own core, owned by root")
	g.Expect(s.ELF).NotTo(BeNil())
	g.Expect(s.ELF.Machine).To(Equal("x86_64"))
	g.Expect(s.ELF.CrashModule).To(Equal("crashy"))
	g.Expect(s.ELF.BuildID).NotTo(BeEmpty())
	g.Expect(s.ELF.FaultAddress).To(Equal("0x0"))
	g.Expect(s.Signature).To(HaveLen(12))
	g.Expect(s.ParseError).To(BeEmpty())
	g.Expect(cd.Labels[coredogv1.LabelNode]).To(Equal(h.cfg.NodeName))
	g.Expect(cd.Name).To(Equal(app.DumpName(h.cfg.NodeName, identityOf(t, filepath.Join(h.dir, name)))))

	// The controller's download: exactly the bytes on disk, and trailers that say so.
	g.Eventually(func(g Gomega) {
		code, got, trailer := h.download(g, cd.Name)
		g.Expect(code).To(Equal(http.StatusOK))
		g.Expect(got).To(Equal(raw))
		sum := sha256.Sum256(raw)
		g.Expect(trailer.Get("X-Coredog-Raw-Sha256")).To(Equal(hex.EncodeToString(sum[:])))
		g.Expect(trailer.Get("X-Coredog-Raw-Size")).To(Equal(fmt.Sprint(len(raw))))
	}, wait, 200*time.Millisecond).Should(Succeed())

	// Uploaded: the node's copy goes, and so does the endpoint's.
	setPhase(g, cd, coredogv1.PhaseUploaded)
	g.Eventually(func() bool {
		_, err := os.Stat(filepath.Join(h.dir, name))
		return os.IsNotExist(err)
	}, wait, 100*time.Millisecond).Should(BeTrue())
	code, _, _ := h.download(g, cd.Name)
	g.Expect(code).To(Equal(http.StatusNotFound))
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(1)) }, time.Second, 200*time.Millisecond).Should(Succeed())
}

func identityOf(t *testing.T, path string) (id detect.Identity) {
	t.Helper()
	var st syscall.Stat_t
	must(t, syscall.Lstat(path, &st))
	id.Device, id.Inode, id.CtimeNanos, id.Size = st.Dev, st.Ino, st.Ctim.Nano(), st.Size
	return id
}
