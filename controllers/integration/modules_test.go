package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/internal/wire"
)

// moduleFiles is an agent's module store for these tests: build-id to the
// file served for it (which may lie about its build-id).
type moduleFiles map[string]string

func (m moduleFiles) Open(id string) (*os.File, error) {
	p, ok := m[id]
	if !ok {
		return nil, os.ErrNotExist
	}
	return os.Open(p)
}

// countingStore counts, per key, the writes that stored an object and all
// write attempts, for buckets whose name holds "count" (openTestStore).
type countingStore struct{ storage.Store }

var (
	storeWritesMu sync.Mutex
	storeWrites   = map[string]int{}
	storeAttempts = map[string]int{}
)

func (c countingStore) Write(ctx context.Context, key string, r io.Reader, o storage.WriteOptions) (int64, error) {
	n, err := c.Store.Write(ctx, key, r, o)
	storeWritesMu.Lock()
	defer storeWritesMu.Unlock()
	storeAttempts[key]++
	if err == nil {
		storeWrites[key]++
	}
	return n, err
}

func writesOf(key string) (stored, attempts int) {
	storeWritesMu.Lock()
	defer storeWritesMu.Unlock()
	return storeWrites[key], storeAttempts[key]
}

// gccELF builds a small program with a build-id (and DWARF with -g).
func gccELF(t *testing.T, dir, name string, flags ...string) (path, id string) {
	t.Helper()
	src := filepath.Join(dir, name+".c")
	if err := os.WriteFile(src, fmt.Appendf(nil, "int %s(void){return 1;} int main(void){return %s();}\n", name, name), 0o600); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, name)
	if out, err := exec.Command("gcc", append(append([]string{}, flags...), "-Wl,--build-id", "-o", path, src)...).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := buildid.Read(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return path, info.ID
}

// moduleAgent is the real agent server (agent/serve) of one node of a
// policy, with the policy's agent certificate, its Lease, and the dumps
// and module files a test registers.
type moduleAgent struct {
	t        *testing.T
	policy   string
	node     string
	reg      *serve.Registry
	endpoint string
	dir      string
}

func newModuleAgent(t *testing.T, policy, node string, files moduleFiles) *moduleAgent {
	t.Helper()
	reg := serve.NewRegistry()
	endpoint := certifiedAgent(t, policy, node, serve.Options{Registry: reg, Modules: files})
	return &moduleAgent{t: t, policy: policy, node: node, reg: reg, dir: t.TempDir(), endpoint: endpoint}
}

// certifiedAgent runs the real agent server (agent/serve) of node with
// opts, as that node's agent of policy does: its own key, certified by the
// manager through the node's Lease, which then names the server's endpoint.
// It returns the endpoint.
func certifiedAgent(t *testing.T, policy, node string, opts serve.Options) string {
	t.Helper()
	g := NewWithT(t)
	ctx := context.Background()
	id, err := serve.NewIdentity(policy, node)
	g.Expect(err).NotTo(HaveOccurred())
	tlsDir := t.TempDir()
	var caPEM []byte
	g.Eventually(func(g Gomega) {
		var s corev1.Secret
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: testNamespace, Name: agentset.AgentCASecretName(policy)}, &s)).To(Succeed())
		caPEM = s.Data[pki.CACertKey]
		g.Expect(os.WriteFile(filepath.Join(tlsDir, pki.CACertKey), caPEM, 0o600)).To(Succeed())
	}, timeout, interval).Should(Succeed())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: agentlease.Name(policy, node), Namespace: testNamespace,
			Labels:      map[string]string{coredogv1.LabelPolicy: coredogv1.LabelValue(policy), coredogv1.LabelNode: node},
			Annotations: map[string]string{agentlease.AnnotationServingCSR: string(id.CSR())}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: &node, RenewTime: &metav1.MicroTime{Time: time.Now()}},
	}
	g.Expect(k8s.Create(ctx, lease)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), lease) })
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(lease), lease)).To(Succeed())
		cert := lease.Annotations[agentlease.AnnotationServingCert]
		g.Expect(cert).NotTo(BeEmpty())
		_, err := id.Accept([]byte(cert), caPEM, time.Now())
		g.Expect(err).NotTo(HaveOccurred())
	}, timeout, interval).Should(Succeed())

	opts.TLSDir, opts.Identity = tlsDir, id
	if opts.Logger.GetSink() == nil {
		opts.Logger = testr.New(t).WithName("agent-" + node)
	}
	srv, err := serve.NewServer(opts, "127.0.0.1:0")
	g.Expect(err).NotTo(HaveOccurred())
	srvCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = srv.Serve(srvCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	endpoint := agentlease.Endpoint("127.0.0.1", portOf(srv.Addr()))
	g.Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(lease), lease)).To(Succeed())
		lease.Annotations[agentlease.AnnotationEndpoint] = endpoint
		g.Expect(k8s.Update(ctx, lease)).To(Succeed())
	}, timeout, interval).Should(Succeed())
	return endpoint
}

func portOf(addr string) int {
	var port int
	_, _ = fmt.Sscanf(addr[strings.LastIndexByte(addr, ':')+1:], "%d", &port)
	return port
}

// crash registers a dump file with modules and makes its CoreDump.
func (a *moduleAgent) crash(name string, mods []wire.Module) *coredogv1.CoreDump {
	a.t.Helper()
	data := bytes.Repeat([]byte("core "), 2000)
	path := filepath.Join(a.dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		a.t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		a.t.Fatal(err)
	}
	a.reg.Add(serve.Entry{Name: name, Path: path, Device: st.Dev, Inode: st.Ino, Size: int64(len(data)), Modules: mods})
	cd := validCoreDump(name)
	cd.Namespace = testNamespace
	cd.Spec.Size, cd.Spec.DisplaySize = int64(len(data)), "10Ki"
	cd.Spec.PolicyName, cd.Spec.NodeName = a.policy, a.node
	NewWithT(a.t).Expect(k8s.Create(context.Background(), cd)).To(Succeed())
	a.t.Cleanup(func() { _ = k8s.Delete(context.Background(), cd) })
	return cd
}

// modulePolicy makes a policy storing into a counted file:// bucket, and
// returns it with the store, opened as the manager opens it.
func modulePolicy(t *testing.T, name string) (*coredogv1.CoreDumpPolicy, storage.Store) {
	t.Helper()
	p := newPolicy(name, "/var/lib/cores-"+name)
	p.Spec.Storage.URL = "file://" + filepath.Join(t.TempDir(), "count-"+name)
	p.Spec.Limits.RateLimit.Count = ptr.To[int32](1000)
	p = createPolicy(t, p)
	loc, err := storage.ParseURL(p.Spec.Storage.URL)
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.Open(context.Background(), loc, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return p, st
}

func storedBytes(t *testing.T, st storage.Store, key string) []byte {
	t.Helper()
	r, err := st.Read(context.Background(), key)
	if err != nil {
		return nil
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return b
}

func moduleStates(cd *coredogv1.CoreDump) map[string]coredogv1.CrashModule {
	out := map[string]coredogv1.CrashModule{}
	if cd.Status.Analysis != nil {
		for _, m := range cd.Status.Analysis.Modules {
			out[m.Path] = m
		}
	}
	return out
}

// TestBuildIDSharedBy50DumpsIsStoredOnce: 50 dumps of one program, served
// by the real agent server, list the same executable (with DWARF) and
// library. Each build-id is stored once, in the debuginfod layout under the
// location's prefix; a module the agent could not collect is Missing with a
// reason and the dumps are Uploaded all the same; the files stay while any
// dump refers to them and go with the last one.
func TestBuildIDSharedBy50DumpsIsStoredOnce(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p, st := modulePolicy(t, "mods")
	dir := t.TempDir()
	exe, exeID := gccELF(t, dir, "server", "-g")
	lib, libID := gccELF(t, dir, "libshared", "-s")
	agent := newModuleAgent(t, p.Name, "node-mods", moduleFiles{exeID: exe, libID: lib})
	goneID := strings.Repeat("cc", 20)
	mods := []wire.Module{
		{Path: exe, BuildID: exeID, Start: 0x400000, End: 0x405000, Collected: true},
		{Path: "/usr/lib/libshared.so", BuildID: libID, Start: 0x7f0000000000, End: 0x7f0000004000, Collected: true},
		{Path: "/usr/lib/libgone.so", BuildID: goneID, Start: 0x7f0000010000, End: 0x7f0000014000, Reason: wire.ModuleProcessGone},
		{Path: "/usr/lib/libnoid.so\x1b[31m", Start: 0x7f0000020000, End: 0x7f0000024000, Reason: wire.ModuleNoBuildID},
	}
	var dumps []*coredogv1.CoreDump
	for i := range 50 {
		dumps = append(dumps, agent.crash(fmt.Sprintf("mods-%d", i), mods))
	}
	for _, cd := range dumps {
		g.Eventually(func(g Gomega) {
			var got coredogv1.CoreDump
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
			g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploaded), "%+v", got.Status)
			states := moduleStates(&got)
			g.Expect(states).To(HaveLen(4))
			g.Expect(states[exe].State).To(Equal(coredogv1.ModuleStored))
			g.Expect(states[exe].BuildID).To(Equal(exeID))
			g.Expect(states[exe].Start).To(Equal("0x400000"))
			g.Expect(states["/usr/lib/libshared.so"].State).To(Equal(coredogv1.ModuleStored))
			gone := states["/usr/lib/libgone.so"]
			g.Expect(gone.State).To(Equal(coredogv1.ModuleMissing))
			g.Expect(gone.Reason).To(Equal(wire.ModuleProcessGone.Message()))
			// The path, the container's choice, is escaped.
			noid := states[`/usr/lib/libnoid.so\x1b[31m`]
			g.Expect(noid.State).To(Equal(coredogv1.ModuleMissing))
			g.Expect(noid.Reason).To(Equal(wire.ModuleNoBuildID.Message()))
			g.Expect(got.Status.Analysis.Outcome).To(Equal(coredogv1.AnalysisUnavailable))
		}, 90*time.Second, 200*time.Millisecond).Should(Succeed())
	}
	want, err := os.ReadFile(exe)
	g.Expect(err).NotTo(HaveOccurred())
	for _, key := range []string{buildid.Key(exeID, buildid.Executable), buildid.Key(exeID, buildid.DebugInfo), buildid.Key(libID, buildid.Executable)} {
		stored, attempts := writesOf(key)
		t.Logf("%s: stored %d times in %d write attempts by 50 dumps", key, stored, attempts)
		g.Expect(stored).To(Equal(1), key)
		g.Expect(storedBytes(t, st, key)).NotTo(BeEmpty(), key)
	}
	g.Expect(storedBytes(t, st, buildid.Key(exeID, buildid.Executable))).To(Equal(want))
	g.Expect(storedBytes(t, st, buildid.Key(libID, buildid.DebugInfo))).To(BeNil(), "a stripped library has no debuginfo")
	g.Expect(storedBytes(t, st, buildid.Key(goneID, buildid.Executable))).To(BeNil())

	// Retention: the files stay while a dump refers to them.
	for _, cd := range dumps[1:] {
		g.Expect(k8s.Delete(ctx, cd)).To(Succeed())
	}
	for _, cd := range dumps[1:] {
		g.Eventually(func() error {
			return k8s.Get(ctx, client.ObjectKeyFromObject(cd), &coredogv1.CoreDump{})
		}, 60*time.Second, 200*time.Millisecond).ShouldNot(Succeed())
	}
	g.Expect(storedBytes(t, st, buildid.Key(exeID, buildid.Executable))).To(Equal(want), "deleted while a dump refers to it")
	g.Expect(k8s.Delete(ctx, dumps[0])).To(Succeed())
	g.Eventually(func() []byte {
		return storedBytes(t, st, buildid.Key(exeID, buildid.Executable))
	}, 60*time.Second, 200*time.Millisecond).Should(BeNil(), "kept after the last dump referring to it went")
	g.Expect(storedBytes(t, st, buildid.Key(exeID, buildid.DebugInfo))).To(BeNil())
	g.Expect(storedBytes(t, st, buildid.Key(libID, buildid.Executable))).To(BeNil())
}

// TestModuleWithAnotherBuildIDIsRefused is the attack of an agent (or a
// container that swapped a file) serving, for a build-id, a file with
// another build-id: the manager checks the file before storing it, refuses
// it, says so in status, and stores the dump all the same.
func TestModuleWithAnotherBuildIDIsRefused(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p, st := modulePolicy(t, "modforged")
	dir := t.TempDir()
	other, _ := gccELF(t, dir, "other", "-s")
	claimed := strings.Repeat("ab", 20)
	agent := newModuleAgent(t, p.Name, "node-modforged", moduleFiles{claimed: other})
	cd := agent.crash("modforged-0", []wire.Module{{Path: "/usr/bin/app", BuildID: claimed, Start: 0x1000, End: 0x2000, Collected: true}})
	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploaded), "%+v", got.Status)
		m := moduleStates(&got)["/usr/bin/app"]
		g.Expect(m.State).To(Equal(coredogv1.ModuleMissing))
		g.Expect(m.Reason).To(ContainSubstring("refused"))
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Expect(storedBytes(t, st, buildid.Key(claimed, buildid.Executable))).To(BeNil())
}
