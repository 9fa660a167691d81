package app_test

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/testcrash"
)

// crashLoopDuration is how long TestCrashLoopIsCounted crashes: 10 s in
// `make test`, the full 60 s with COREDOG_FAULTS=full (`make test-faults`),
// or COREDOG_CRASH_LOOP (a Go duration).
func crashLoopDuration(t *testing.T) time.Duration {
	if v := os.Getenv("COREDOG_CRASH_LOOP"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("COREDOG_CRASH_LOOP=%q: want a positive duration such as 60s", v)
		}
		return d
	}
	if os.Getenv("COREDOG_FAULTS") == "full" {
		return time.Minute
	}
	return 10 * time.Second
}

// minLoopCrashes: the loop runs on until it has crashed this often, so that
// a slow machine still crashes several times past every budget.
const minLoopCrashes = 150

// TestCrashLoopIsCounted performs the attack of a pod that forks children
// and has them crash as fast as it can: real processes die of SIGSEGV in a
// tight loop and the kernel writes each core. Half of them come from one
// pod (one hostname, one signature), the rest from 40 others, as a node
// with many crash-looping pods would see. The agent runs with the API's
// default budgets. Every crash must end as a CoreDump or as a count in a
// CoreDump's series (none lost), the CoreDumps must stay within the node's
// and each key's token buckets, and every file must leave the node.
func TestCrashLoopIsCounted(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, func(c *app.Config) {
		c.NodeBurst, c.NodePerMinute = int(coredogv1.DefaultNodeBurst), int(coredogv1.DefaultNodePerMinute)
		c.SignatureBurst, c.SignaturePerHour = int(coredogv1.DefaultSignatureBurst), int(coredogv1.DefaultSignaturePerHour)
	})
	start := time.Now()
	h.start()
	pattern, err := corefile.ParsePattern(h.cfg.FileNamePattern)
	must(t, err)

	const hot = "loop-0"
	stage := t.TempDir()
	perHost := map[string]int{}
	crashes := 0
	for d := crashLoopDuration(t); time.Since(start) < d || crashes < minLoopCrashes; crashes++ {
		c, err := testcrash.Run(crasher, stage, t.Logf)
		must(t, err)
		host := hot
		if crashes%2 == 1 {
			host = fmt.Sprintf("loop-%d", 1+(crashes/2)%40)
		}
		perHost[host]++
		name := pattern.Render(corefile.NameFields{Hostname: host, Executable: "crashy", HostPID: int64(c.PID), Signal: 11, Time: time.Now()})
		must(t, os.Rename(c.Core, filepath.Join(h.dir, name)))
	}
	t.Logf("%d crashes in %s", crashes, time.Since(start).Round(time.Second))

	// Every crash is a CoreDump or counted, and every file is gone.
	var dumps []coredogv1.CoreDump
	g.Eventually(func(g Gomega) {
		dumps = h.dumps(g)
		counted := int64(0)
		for _, cd := range dumps {
			if s := cd.Series; s != nil {
				counted += s.Count + s.OtherCount
			}
		}
		g.Expect(int64(len(dumps)) + counted).To(Equal(int64(crashes)))
	}, 2*time.Minute, 500*time.Millisecond).Should(Succeed())
	elapsed := time.Since(start)
	t.Logf("%d crashes: %d CoreDumps, the rest counted", crashes, len(dumps))
	left, err := os.ReadDir(h.dir)
	must(t, err)
	for _, e := range left {
		if cd := h.dumpFor(g, e.Name()); cd == nil {
			t.Errorf("%s is still on the node and has no CoreDump", e.Name())
		}
	}

	// Within the node's bucket over the whole run, and each key's.
	nodeMax := int(coredogv1.DefaultNodeBurst) + int(math.Floor(elapsed.Minutes()*float64(coredogv1.DefaultNodePerMinute)))
	keyMax := int(coredogv1.DefaultSignatureBurst) + int(math.Floor(elapsed.Hours()*float64(coredogv1.DefaultSignaturePerHour)))
	g.Expect(len(dumps)).To(BeNumerically("<=", nodeMax), "CoreDumps for %d crashes in %s", crashes, elapsed)
	g.Expect(crashes).To(BeNumerically(">", 2*nodeMax), "too few crashes to exceed the budget")
	perKey := map[string]int{}
	hotCounted := int64(0)
	signature := ""
	for _, cd := range dumps {
		g.Expect(cd.Spec.NodeName).To(Equal(h.cfg.NodeName))
		perKey[cd.Spec.Process.Hostname]++
		if signature == "" {
			signature = cd.Spec.Signature
		}
		g.Expect(cd.Spec.Signature).To(Equal(signature), "one crash site, one signature")
		if s := cd.Series; s != nil {
			g.Expect(s.FirstObserved.Time).NotTo(BeTemporally(">", s.LastObserved.Time))
			if cd.Spec.Process.Hostname == hot {
				hotCounted += s.Count
			}
		}
	}
	for host, n := range perKey {
		g.Expect(n).To(BeNumerically("<=", keyMax), "CoreDumps of %s", host)
	}
	// The hot pod's crashes are all its own: the CoreDumps it got and the
	// count on them.
	g.Expect(perKey[hot]).To(Equal(keyMax), "the hot pod gets its whole burst")
	g.Expect(int64(perKey[hot]) + hotCounted).To(Equal(int64(perHost[hot])))
}

// TestRestartedAgentKeepsItsBudget: an agent that restarts (as a crash-looping
// or evicted agent would) does not hand a crash loop fresh buckets; the
// crash after the restart is counted on the CoreDump made before it.
func TestRestartedAgentKeepsItsBudget(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, func(c *app.Config) { c.SignatureBurst = 1 })
	h.start()
	first, _ := h.crash("web-0")
	var cd *coredogv1.CoreDump
	g.Eventually(func(g Gomega) { cd = h.dumpFor(g, first) }, wait, 100*time.Millisecond).Should(Succeed())
	h.stop()

	h.start()
	second, _ := h.crash("web-0")
	g.Eventually(func(g Gomega) {
		dumps := h.dumps(g)
		g.Expect(dumps).To(HaveLen(1))
		g.Expect(dumps[0].Name).To(Equal(cd.Name))
		g.Expect(dumps[0].Series).NotTo(BeNil())
		g.Expect(dumps[0].Series.Count).To(Equal(int64(1)))
	}, wait, 100*time.Millisecond).Should(Succeed())
	_, err := os.Stat(filepath.Join(h.dir, second))
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the counted crash's file is still on the node")
}
