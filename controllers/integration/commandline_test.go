package integration

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/testcrash"
)

// TestCommandLineIsStoredButNeverInTheCoreDump is the read an agent token
// can make: list and watch every node's CoreDumps (RBAC cannot narrow a
// list to a node, and admission sees no reads). A real program crashes with
// a secret among its arguments; its real core goes through the real agent
// and manager. The whole CoreDump, as the API server serves it to any
// reader, and the events about it hold no trace of the secret; the metadata
// file stored next to the dump holds the command line.
func TestCommandLineIsStoredButNeverInTheCoreDump(t *testing.T) {
	g := NewWithT(t)
	// A short directory: the kernel keeps 80 bytes of arguments.
	dir, err := os.MkdirTemp("", "cl")
	g.Expect(err).NotTo(HaveOccurred())
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	prog, err := testcrash.Build(dir, "crashy")
	g.Expect(err).NotTo(HaveOccurred())
	const secret = "hunter2-6f1d0c"
	crash, err := testcrash.Run(prog, dir, t.Logf, "--password="+secret)
	g.Expect(err).NotTo(HaveOccurred())
	core, err := os.ReadFile(crash.Core)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(core)).To(ContainSubstring("--password="+secret), "the core's notes must hold the secret for the test to mean anything")

	e := newDumpEnv(t, "cmdline", nil)
	name := e.crashFile("web-0", "crashy", core)
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)
	g.Expect(cd.Spec.ELF).NotTo(BeNil(), "the agent read the real core's notes")
	g.Expect(cd.Spec.Process.Executable).To(Equal("crashy"))

	// Every byte of the object as the API server hands it to a reader.
	var u unstructured.Unstructured
	u.SetGroupVersionKind(schema.GroupVersionKind{Group: coredogv1.GroupVersion.Group, Version: coredogv1.GroupVersion.Version, Kind: "CoreDump"})
	g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: testNamespace, Name: cd.Name}, &u)).To(Succeed())
	whole, err := json.Marshal(u.Object)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(whole)).NotTo(ContainSubstring(secret))
	g.Expect(string(whole)).NotTo(ContainSubstring("password"))
	g.Expect(string(whole)).NotTo(ContainSubstring("commandLine"))
	var list unstructured.UnstructuredList
	list.SetGroupVersionKind(schema.GroupVersionKind{Group: coredogv1.GroupVersion.Group, Version: coredogv1.GroupVersion.Version, Kind: "CoreDumpList"})
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(testNamespace))).To(Succeed())
	all, err := json.Marshal(list.Object)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(all)).NotTo(ContainSubstring(secret))
	var events eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &events)).To(Succeed())
	evs, err := json.Marshal(events)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(evs)).NotTo(ContainSubstring(secret))

	// The metadata file beside the dump keeps the command line.
	stored := strings.TrimPrefix(cd.Status.Storage.URL, "file://")
	meta, err := os.ReadFile(strings.TrimSuffix(stored, ".zst") + ".json")
	g.Expect(err).NotTo(HaveOccurred())
	var doc struct {
		Spec coredogv1.StoredCoreDumpSpec `json:"spec"`
	}
	g.Expect(json.Unmarshal(meta, &doc)).To(Succeed())
	g.Expect(doc.Spec.Process.CommandLine).To(Equal(prog+" --password="+secret), "%s", meta)
	g.Expect(doc.Spec.Process.Executable).To(Equal("crashy"))
	g.Expect(doc.Spec.NodeName).To(Equal(e.node))
}
