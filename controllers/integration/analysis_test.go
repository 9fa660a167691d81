package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
	"github.com/coredog/coredog/test/testcrash"
)

// TestRealCrashHasItsBacktraceInStatus: a real program crashes, the real
// agent unwinds its core at capture with the program's own binary, and the
// manager writes the crashing thread's frames into status.analysis and every
// thread into the metadata file.
func TestRealCrashHasItsBacktraceInStatus(t *testing.T) {
	g := NewWithT(t)
	dir := t.TempDir()
	prog, err := testcrash.Build(dir, "crashy")
	g.Expect(err).NotTo(HaveOccurred())
	crash, err := testcrash.Run(prog, dir, t.Logf)
	g.Expect(err).NotTo(HaveOccurred())
	core, err := os.ReadFile(crash.Core)
	g.Expect(err).NotTo(HaveOccurred())

	e := newDumpEnvWith(t, "backtrace", nil, func(c *app.Config) { c.HostRoot = "/" })
	name := e.crashFile("web-0", "crashy", core)
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	a := cd.Status.Analysis
	g.Expect(a).NotTo(BeNil())
	g.Expect(a.Outcome).To(Equal(coredogv1.AnalysisComplete), "%+v", a)
	g.Expect(a.Threads).To(BeEquivalentTo(1))
	g.Expect(a.CrashingThread).To(BeEquivalentTo(crash.PID))
	g.Expect(a.Frames).NotTo(BeEmpty())
	g.Expect(a.Frames[0].Function).To(Equal("main"))
	g.Expect(a.Frames[0].Module).To(Equal("crashy"))
	g.Expect(a.Frames[0].File).To(HaveSuffix("crashy.c"))
	g.Expect(a.Frames[0].Line).To(BeNumerically(">", 0))

	stored := strings.TrimPrefix(cd.Status.Storage.URL, "file://")
	meta, err := os.ReadFile(strings.TrimSuffix(stored, ".zst") + ".json")
	g.Expect(err).NotTo(HaveOccurred())
	var doc struct {
		Status   coredogv1.CoreDumpStatus `json:"status"`
		Analysis wire.Analysis            `json:"analysis"`
	}
	g.Expect(json.Unmarshal(meta, &doc)).To(Succeed())
	g.Expect(doc.Analysis.Stacks).To(HaveLen(1))
	g.Expect(doc.Analysis.Stacks[0].Frames[0].Function).To(Equal("main"))
	g.Expect(doc.Status.Analysis).NotTo(BeNil())
}

// TestHostileAnalysisIsBoundedAndSanitised is the attack of an agent (or
// anything holding its certificate) that answers the analysis request with
// more threads and frames than the API allows, names full of terminal
// escapes and bidirectional overrides, addresses that are not addresses and
// a reason of a kilobyte: it is cut to the bounds and cleaned before it
// reaches status and the metadata file, and the upload does not fail; an
// agent that sends none leaves an Unavailable analysis. (One that sends more
// than wire.MaxAnalysisBytes: agentclient's
// TestFetchAnalysisTakesItAsHostileInput.) The modules another writer put
// into status.analysis stay.
func TestHostileAnalysisIsBoundedAndSanitised(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := newPolicy("hostile-analysis", "/var/lib/cores-hostile-analysis")
	store := filepath.Join(t.TempDir(), "bucket")
	p.Spec.Storage.URL = "file://" + store
	p.Spec.NodeSelector = map[string]string{"dumps": "hostile-analysis"}
	createPolicy(t, p)
	reg := serve.NewRegistry()

	evil := "\x1b[31mpwned\u202e\x00" + strings.Repeat("A", 600)
	hostile := wire.Analysis{Outcome: coredogv1.AnalysisComplete, Reason: strings.Repeat("r\n", 600), Threads: -5, CrashingThread: 7}
	for i := range 300 {
		ts := wire.ThreadStack{TID: int32(7 + i), Reason: evil}
		frames := 1
		if i == 0 {
			frames = 100 // the crashing thread
		}
		for j := range frames {
			ts.Frames = append(ts.Frames, coredogv1.StackFrame{Module: evil, BuildID: "../../etc/passwd", PC: fmt.Sprintf("0x%x; rm -rf /", j),
				Offset: "0x1", Function: evil, File: evil + strings.Repeat("f", 2000), Line: -3})
		}
		hostile.Stacks = append(hostile.Stacks, ts)
	}
	doc, err := json.Marshal(hostile)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(len(doc)).To(BeNumerically("<=", wire.MaxAnalysisBytes), "the attack must fit the bound to be read at all")

	for _, tc := range []struct {
		name     string
		analysis []byte
		check    func(g Gomega, a *coredogv1.CrashAnalysis)
	}{
		{"bounded", doc, func(g Gomega, a *coredogv1.CrashAnalysis) {
			g.Expect(a.Frames).To(HaveLen(coredogv1.MaxAnalysisFrames))
			g.Expect(a.Threads).To(BeEquivalentTo(0))
			g.Expect(len(a.Reason)).To(BeNumerically("<=", 256))
			for _, f := range a.Frames {
				for _, s := range []string{f.Module, f.Function, f.File} {
					g.Expect(strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) })).To(Equal(-1), "%q", s)
				}
				g.Expect(len(f.Function)).To(BeNumerically("<=", 512))
				g.Expect(len(f.Module)).To(BeNumerically("<=", 255))
				g.Expect(len(f.File)).To(BeNumerically("<=", 1024))
				g.Expect(f.PC).To(BeEmpty())
				g.Expect(f.BuildID).To(BeEmpty())
				g.Expect(f.Offset).To(Equal("0x1"))
				g.Expect(f.Line).To(BeZero())
			}
		}},
		{"none", nil, func(g Gomega, a *coredogv1.CrashAnalysis) {
			g.Expect(a.Outcome).To(Equal(coredogv1.AnalysisUnavailable))
			g.Expect(a.Reason).To(Equal("the agent did not analyse this dump"))
			g.Expect(a.Frames).To(BeEmpty())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			name := "hostile-analysis-" + tc.name
			file := filepath.Join(t.TempDir(), "core")
			g.Expect(os.WriteFile(file, []byte("not much of a core"), 0o600)).To(Succeed())
			var st syscall.Stat_t
			g.Expect(syscall.Stat(file, &st)).To(Succeed())
			reg.Add(serve.Entry{Name: name, Path: file, Device: st.Dev, Inode: st.Ino, Size: st.Size, Analysis: tc.analysis})

			// Another writer's modules are in status.analysis before the
			// upload: the dump waits for its agent's Lease meanwhile.
			node := "node-" + name
			cd := validCoreDump(name)
			cd.Namespace, cd.Spec.PolicyName, cd.Spec.NodeName, cd.Spec.Size = testNamespace, p.Name, node, st.Size
			g.Expect(k8s.Create(ctx, cd)).To(Succeed())
			t.Cleanup(func() { _ = k8s.Delete(context.Background(), cd) })
			modules := []coredogv1.CrashModule{{Path: "/usr/lib/libc.so.6", BuildID: "abcd", State: coredogv1.ModuleMissing}}
			g.Eventually(func(g Gomega) {
				var got coredogv1.CoreDump
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
				g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploading))
				patch := client.MergeFrom(got.DeepCopy())
				got.Status.Analysis = &coredogv1.CrashAnalysis{Outcome: coredogv1.AnalysisPartial, Modules: modules}
				g.Expect(k8s.Status().Patch(ctx, &got, patch)).To(Succeed())
			}, timeout, interval).Should(Succeed())
			// Now its agent comes: the node's own, certified by the manager,
			// serving what a compromised agent would.
			certifiedAgent(t, p.Name, node, serve.Options{Registry: reg})

			var got coredogv1.CoreDump
			g.Eventually(func(g Gomega) {
				g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(cd), &got)).To(Succeed())
				g.Expect(got.Status.Phase).To(Equal(coredogv1.PhaseUploaded), "%+v", got.Status)
			}, 2*time.Minute, interval).Should(Succeed())
			g.Expect(got.Status.Analysis).NotTo(BeNil())
			g.Expect(got.Status.Analysis.Modules).To(Equal(modules), "the upload replaced another writer's modules")
			tc.check(g, got.Status.Analysis)

			meta, err := os.ReadFile(strings.TrimSuffix(strings.TrimPrefix(got.Status.Storage.URL, "file://"), ".zst") + ".json")
			g.Expect(err).NotTo(HaveOccurred())
			var stored struct {
				Analysis wire.Analysis `json:"analysis"`
			}
			g.Expect(json.Unmarshal(meta, &stored)).To(Succeed())
			g.Expect(len(stored.Analysis.Stacks)).To(BeNumerically("<=", wire.MaxAnalysisThreads))
			for _, s := range stored.Analysis.Stacks {
				g.Expect(len(s.Frames)).To(BeNumerically("<=", wire.MaxThreadFrames))
			}
			g.Expect(string(meta)).NotTo(ContainSubstring(`\u001b`))
			g.Expect(string(meta)).NotTo(ContainSubstring("rm -rf"))
		})
	}
}
