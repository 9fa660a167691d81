package e2e

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/test/localcluster"
	"github.com/coredog/coredog/test/testcrash"
)

// Node faults: the node's filesystem, its inotify limits, and bursts and
// loops of crashes. The checks every row shares (nfSettle) count from the
// CoreDumps, the bucket and the node's directory.

// nfDumps lists a node's CoreDumps by the policy label the agent sets, which
// the API server filters, so that a row with thousands of dumps stays cheap
// to poll.
func nfDumps(ctx context.Context, n *node) ([]coredogv1.CoreDump, error) {
	var list coredogv1.CoreDumpList
	err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{coredogv1.LabelPolicy: coredogv1.LabelValue(n.policy)})
	if err != nil {
		return nil, err
	}
	out := list.Items[:0]
	for _, cd := range list.Items {
		if cd.Spec.PolicyName == n.policy {
			out = append(out, cd)
		}
	}
	return out, nil
}

// nfResult is what a fault row counts once the node's dumps have settled.
type nfResult struct {
	// byFile holds every CoreDump of the node by file name.
	byFile map[string][]coredogv1.CoreDump
	// final holds the one CoreDump of each expected file that reached an
	// accepted final phase.
	final                  map[string]coredogv1.CoreDump
	lost, duplicated, left int
	// converged is the time from the end of the fault until every file's
	// dump reached an accepted final phase.
	converged time.Duration
	problems  []string
}

func (r *nfResult) problem(format string, args ...any) {
	if len(r.problems) < 40 {
		r.problems = append(r.problems, fmt.Sprintf(format, args...))
	}
}

// nfSettle waits until every file in files (name → SHA-256 of its bytes, ""
// when unknown) has exactly one CoreDump in a final phase that accept takes
// (nil: Uploaded only), then counts: files whose dump is missing or ended
// otherwise (lost); CoreDumps beyond one per file and objects in the bucket
// beyond each Uploaded dump's .zst and .json (duplicated); and files still in
// the node's directory 30 s after their dump was done with (left). Stored
// checksums must match the files. It never fails the test itself: callers
// pass the result to nfRequireClean.
func nfSettle(t *testing.T, n *node, files map[string]string, accept func(*coredogv1.CoreDump) bool, since time.Time, timeout time.Duration) *nfResult {
	t.Helper()
	if accept == nil {
		accept = func(cd *coredogv1.CoreDump) bool { return cd.Status.Phase == coredogv1.PhaseUploaded }
	}
	poll := 250 * time.Millisecond
	res := &nfResult{}
	deadline := time.Now().Add(timeout)
	ctx := context.Background()
	if len(files) > 100 {
		// Listing thousands of CoreDumps costs the API server more than
		// the system under test spends on them: wait on the policy's
		// counters, then list to check.
		poll = time.Second
		nfWaitCounted(n, int64(len(files)), deadline)
	}
	for {
		cds, err := nfDumps(ctx, n)
		if err == nil {
			res.byFile = map[string][]coredogv1.CoreDump{}
			for _, cd := range cds {
				res.byFile[cd.Spec.FileName] = append(res.byFile[cd.Spec.FileName], cd)
			}
			settled := true
			for f := range files {
				c := res.byFile[f]
				if len(c) != 1 || !c[0].Status.Phase.IsFinal() {
					settled = false
					break
				}
			}
			if settled {
				res.converged = time.Since(since)
				break
			}
		}
		if time.Now().After(deadline) {
			res.converged = time.Since(since)
			res.problem("not settled within %s", timeout)
			break
		}
		time.Sleep(poll)
	}

	res.final = map[string]coredogv1.CoreDump{}
	var uploaded []coredogv1.CoreDump
	for f, sum := range files {
		c := res.byFile[f]
		if len(c) > 1 {
			res.duplicated += len(c) - 1
			res.problem("%s has %d CoreDumps", f, len(c))
		}
		ok := false
		for i := range c {
			cd := &c[i]
			if !accept(cd) {
				continue
			}
			if cd.Status.Phase == coredogv1.PhaseUploaded {
				if cd.Status.Storage == nil {
					res.problem("%s: Uploaded without a storage status", f)
					continue
				}
				if sum != "" && cd.Status.Storage.SHA256 != sum {
					res.problem("%s: stored SHA-256 %s, the file's was %s", f, cd.Status.Storage.SHA256, sum)
					continue
				}
				uploaded = append(uploaded, *cd)
			}
			res.final[f] = *cd
			ok = true
			break
		}
		if !ok {
			res.lost++
			if len(c) == 0 {
				res.problem("%s: no CoreDump", f)
			} else {
				res.problem("%s: %s %s (%s)", f, c[0].Status.Phase, c[0].Status.Reason, c[0].Status.Message)
			}
		}
	}
	for f, c := range res.byFile {
		if _, ok := files[f]; !ok {
			res.problem("CoreDump %s of a file the test did not make: %s", c[0].Name, f)
		}
	}

	// The bucket: each Uploaded dump and its metadata, nothing else.
	want := map[string]bool{}
	for _, cd := range uploaded {
		want[cd.Status.Storage.Key] = true
		want[metadataKey(cd.Status.Storage.Key)] = true
	}
	have := map[string]bool{}
	for _, k := range listKeys(t, n.bucket) {
		have[k] = true
		if !want[k] {
			res.duplicated++
			res.problem("object %s in the bucket belongs to no Uploaded dump", k)
		}
	}
	for k := range want {
		if !have[k] {
			res.lost++
			res.problem("object %s of an Uploaded dump is not in the bucket", k)
		}
	}

	// The node: the files of done dumps go.
	var remaining []string
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		remaining = remaining[:0]
		for f := range res.final {
			if _, err := os.Lstat(filepath.Join(n.dir, f)); err == nil {
				remaining = append(remaining, f)
			}
		}
		if len(remaining) == 0 || time.Now().After(end) {
			break
		}
	}
	res.left = len(remaining)
	for _, f := range remaining {
		res.problem("%s is still on the node after its dump was %s", f, res.final[f].Status.Phase)
	}
	return res
}

// nfWaitCounted waits until the node's policy counts at least want dumps
// in a final phase, or until deadline.
func nfWaitCounted(n *node, want int64, deadline time.Time) {
	for time.Now().Before(deadline) {
		var p coredogv1.CoreDumpPolicy
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: n.policy}, &p); err == nil {
			if d := p.Status.Dumps; d.Uploaded+d.Skipped+d.Failed >= want {
				return
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// nfRequireClean fails the test when a dump was lost, stored twice or left
// on the node, or anything else was wrong.
func nfRequireClean(t *testing.T, r *nfResult) {
	t.Helper()
	if r.lost == 0 && r.duplicated == 0 && r.left == 0 && len(r.problems) == 0 {
		return
	}
	t.Fatalf("lost %d, duplicated %d, left on node %d (after %s):\n  %s",
		r.lost, r.duplicated, r.left, r.converged.Round(time.Millisecond), strings.Join(r.problems, "\n  "))
}

// nfWaitLog waits until the process's log holds s.
func nfWaitLog(t *testing.T, path, s string, timeout time.Duration) {
	t.Helper()
	NewWithT(t).Eventually(func() string {
		b, _ := os.ReadFile(path)
		return string(b)
	}).WithTimeout(timeout).WithPolling(100*time.Millisecond).Should(ContainSubstring(s), "log %s", path)
}

// TestFaultDiskFullDuringCore injects a full filesystem while the kernel
// writes a core: the agent's directory is an 8 MiB tmpfs, and the crasher
// runs there after touching 16 MiB of heap, so the kernel's write of the
// core stops at ENOSPC (checked: the filesystem is full and the file ends
// before its program headers say). It checks: the truncated core gets one
// CoreDump with spec.elf.truncated, the crash's facts from its notes, and is
// Uploaded byte for byte as it is on the node; its file is deleted, which
// frees the filesystem; a second crash on the same filesystem then gets a
// complete core, not marked truncated, Uploaded too.
func TestFaultDiskFullDuringCore(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "fault-disk-full", nodeOpts{noPolicy: true, settle: time.Second})
	const fsSize = 8 << 20
	if err := syscall.Mount("tmpfs", n.dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", fsSize)); err != nil {
		t.Fatalf("mounting an 8 MiB tmpfs on the agent's directory %s: %v (this row needs root, or CAP_SYS_ADMIN, to fill a filesystem)", n.dir, err)
	}
	t.Cleanup(func() {
		// The agent first, so that nothing holds the mount.
		if n.agent != nil {
			_ = n.agent.Stop(stopGrace)
		}
		if err := syscall.Unmount(n.dir, 0); err != nil {
			t.Errorf("unmounting the tmpfs at %s: %v; detaching it", n.dir, err)
			_ = syscall.Unmount(n.dir, syscall.MNT_DETACH)
		}
	})
	must(t, k8s.Create(context.Background(), n.policyObject()))
	n.startAgent()

	c, err := testcrash.Run(crasherBin, n.dir, t.Logf, "--touch=16")
	must(t, err)
	if c.ViaGDB {
		t.Fatalf("the kernel wrote no core into %s; this row needs core_pattern \"core\"", n.dir)
	}
	crashed := time.Now()
	name := filepath.Base(c.Core)
	// The agent takes this cut core only once it has been still for the
	// cut quiet time (10 × the settle time of 1 s: no PID to check, and the
	// file is shorter than its program headers say), and deletes it only
	// once it is stored.
	data, err := os.ReadFile(c.Core)
	must(t, err)
	var st syscall.Statfs_t
	must(t, syscall.Statfs(n.dir, &st))
	free := int64(st.Bavail) * st.Bsize
	claimed := nfELFEnd(t, c.Core)
	t.Logf("the kernel wrote %d bytes of a core whose program headers claim %d; %d bytes left free on the %d MiB filesystem",
		len(data), claimed, free, fsSize>>20)
	g.Expect(free).To(BeNumerically("<", 64<<10), "the filesystem should be full")
	g.Expect(int64(len(data))).To(BeNumerically("<", claimed), "the core should be cut short")

	res := nfSettle(t, n, map[string]string{name: sha256Hex(data)}, nil, crashed, uploadTimeout)
	nfRequireClean(t, res)
	cd := res.final[name]
	g.Expect(cd.Spec.Size).To(Equal(int64(len(data))))
	g.Expect(cd.Spec.ELF).NotTo(BeNil(), "the notes come first in a core and are complete: %s", cd.Spec.ParseError)
	g.Expect(cd.Spec.ELF.Truncated).To(BeTrue(), "spec.elf.truncated")
	g.Expect(cd.Spec.Process.Executable).To(Equal("crashy"))
	g.Expect(cd.Spec.Process.SignalName).To(Equal("SIGSEGV"))
	expectStoredBytes(t, n.bucket, &cd, data)
	must(t, syscall.Statfs(n.dir, &st))
	g.Expect(int64(st.Bavail)*st.Bsize).To(BeNumerically(">", fsSize/2), "deleting the stored core should free the filesystem")

	// The filesystem works again. The next crash runs in a subdirectory,
	// so that its core is not another file named like the first.
	again := filepath.Join(n.dir, "again")
	must(t, os.Mkdir(again, 0o755))
	c2, err := testcrash.Run(crasherBin, again, t.Logf)
	must(t, err)
	second := time.Now()
	data2, err := os.ReadFile(c2.Core)
	must(t, err)
	g.Expect(int64(len(data2))).To(Equal(nfELFEnd(t, c2.Core)), "the second core should be complete")
	name2 := "again/" + filepath.Base(c2.Core)
	res2 := nfSettle(t, n, map[string]string{name: sha256Hex(data), name2: sha256Hex(data2)}, nil, second, uploadTimeout)
	nfRequireClean(t, res2)
	cd2 := res2.final[name2]
	g.Expect(cd2.Name).NotTo(Equal(cd.Name))
	g.Expect(cd2.Spec.ELF).NotTo(BeNil())
	g.Expect(cd2.Spec.ELF.Truncated).To(BeFalse())
	expectStoredBytes(t, n.bucket, &cd2, data2)

	recordFault(t, faultRow{
		Group:    "node",
		Injected: fmt.Sprintf("filesystem full while the kernel writes a core (%d MiB tmpfs as the agent's directory, a real crash with 16 MiB of heap: ENOSPC after %.1f MiB)", fsSize>>20, float64(len(data))/(1<<20)),
		Checked:  "the cut core is recorded with spec.elf.truncated and its notes' facts, and stored as it is; its deletion frees the filesystem; the next crash there is complete and stored",
		Dumps:    2, Lost: res2.lost, Duplicated: res2.duplicated, LeftOnNode: res2.left,
		Converged: res.converged,
	})
}

// nfELFEnd returns where the last segment of an ELF core ends, by its
// program headers: the size the kernel meant to write.
func nfELFEnd(t *testing.T, path string) int64 {
	t.Helper()
	f, err := elf.Open(path)
	must(t, err)
	defer f.Close()
	var end int64
	for _, p := range f.Progs {
		end = max(end, int64(p.Off+p.Filesz))
	}
	return end
}

// TestFaultInotifyExhausted injects the per-user inotify instance limit:
// the test opens inotify instances until inotify_init1 fails with EMFILE
// (fs.inotify.max_user_instances is left as it is), and only then starts the
// agent; the instances are released once the agent has chosen its mode. It
// checks: the agent falls back to polling and says so in its log, in
// coredog_agent_detection_mode{mode="poll"} and in its Lease's mode
// annotation; files dropped one by one and in a burst are each captured
// once (detectedBy Poll or Rescan), Uploaded and deleted from the node.
func TestFaultInotifyExhausted(t *testing.T) {
	g := NewWithT(t)
	poll := time.Second
	n := newNode(t, "fault-inotify", nodeOpts{noPolicy: true, poll: poll})
	must(t, k8s.Create(context.Background(), n.policyObject()))

	// Files that are there before the agent starts.
	files := map[string]string{}
	data := map[string][]byte{}
	var names []string
	add := func(i int) {
		name := coreName("inotify-0", "svc", int64(11000+i))
		data[name] = coreLike(1100+i, 24<<10+i<<8)
		files[name] = sha256Hex(data[name])
		n.drop(name, data[name])
		names = append(names, name)
	}
	for i := range 3 {
		add(i)
	}

	// Other processes of this user open and close instances all the time,
	// so a grabber takes every one that comes free until the agent has
	// chosen its mode; if one reached the agent all the same, it is started
	// again.
	var (
		fdMu     sync.Mutex
		fds      []int
		stopGrab chan struct{}
		grabDone chan struct{}
	)
	grab := func() error {
		for {
			fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC)
			if err != nil {
				return err
			}
			fdMu.Lock()
			fds = append(fds, fd)
			fdMu.Unlock()
		}
	}
	release := func() {
		if stopGrab != nil {
			close(stopGrab)
			<-grabDone
			stopGrab = nil
		}
		fdMu.Lock()
		defer fdMu.Unlock()
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
		fds = nil
	}
	t.Cleanup(release)
	if err := grab(); !errors.Is(err, syscall.EMFILE) {
		release()
		t.Fatalf("opening inotify instances until the limit: stopped with %v, want EMFILE", err)
	}
	limit, _ := os.ReadFile("/proc/sys/fs/inotify/max_user_instances")
	held := len(fds)
	t.Logf("opened %d inotify instances before EMFILE (max_user_instances %s)", held, strings.TrimSpace(string(limit)))
	stopGrab, grabDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(grabDone)
		for {
			select {
			case <-stopGrab:
				return
			case <-time.After(time.Millisecond):
			}
			_ = grab()
		}
	}()

	started := time.Now()
	mode := ""
	for attempt := 1; attempt <= 3 && mode != "poll"; attempt++ {
		if attempt > 1 {
			t.Logf("an inotify instance another process freed reached the agent (attempt %d); starting it again", attempt-1)
			must(t, n.agent.Stop(stopGrace))
			started = time.Now()
		}
		n.startAgent()
		g.Eventually(func(g Gomega) {
			m, err := n.metricsOf()
			g.Expect(err).NotTo(HaveOccurred())
			switch {
			case m[`coredog_agent_detection_mode{mode="poll"}`] == 1:
				mode = "poll"
			case m[`coredog_agent_detection_mode{mode="watch"}`] == 1:
				mode = "watch"
			}
			g.Expect(mode).NotTo(BeEmpty())
		}).WithTimeout(15*time.Second).WithPolling(50*time.Millisecond).Should(Succeed(), "the agent should report its detection mode")
	}
	release()
	g.Expect(mode).To(Equal("poll"), "the agent should poll when it cannot get an inotify instance")
	t.Logf("the agent reported polling %s after it was started; inotify instances released", time.Since(started).Round(time.Millisecond))
	nfWaitLog(t, n.agent.LogPath, "Cannot watch the core directory, polling only", 5*time.Second)
	nfWaitLog(t, n.agent.LogPath, "too many open files", time.Second)
	g.Eventually(func(g Gomega) {
		var lease coordinationv1.Lease
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: agentlease.Name(n.policy, n.name)}, &lease)).To(Succeed())
		g.Expect(lease.Annotations).To(HaveKeyWithValue(agentlease.AnnotationMode, "poll"))
	}).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	// Polling stays the mode with inotify available again: files one by
	// one, then a burst.
	for i := 3; i < 6; i++ {
		add(i)
		time.Sleep(poll / 3)
	}
	for i := 6; i < 26; i++ {
		add(i)
	}
	last := time.Now()
	res := nfSettle(t, n, files, nil, last, 2*uploadTimeout)
	nfRequireClean(t, res)
	for name, cd := range res.final {
		g.Expect(cd.Spec.DetectedBy).To(BeElementOf(coredogv1.DetectedByPoll, coredogv1.DetectedByRescan), name)
	}
	m, err := n.metricsOf()
	must(t, err)
	g.Expect(m[`coredog_agent_detection_mode{mode="poll"}`]).To(Equal(1.0))
	g.Expect(m[`coredog_agent_files_found_total{source="Watch"}`]).To(BeZero())
	for _, name := range []string{names[0], names[4], names[len(names)-1]} {
		cd := res.final[name]
		expectStoredBytes(t, n.bucket, &cd, data[name])
	}

	recordFault(t, faultRow{
		Group:    "node",
		Injected: fmt.Sprintf("inotify instance limit reached (%d instances held until inotify_init1 failed with EMFILE) when the agent starts", held),
		Checked:  "the agent polls instead and says so (log, coredog_agent_detection_mode, Lease mode annotation); files present at start, dropped one by one and in a burst are each captured once by polling and stored",
		Dumps:    len(files), Lost: res.lost, Duplicated: res.duplicated, LeftOnNode: res.left,
		Converged: res.converged,
	})
}

// TestFaultTenThousandFiles injects a mass crash: 10,000 small core-like
// files (1,000 in the short form), written under hidden names and renamed
// into place in one go, which overflows the agent's inotify queue in the
// full form. It checks: each file gets exactly one CoreDump, Uploaded with
// the SHA-256 of its bytes (a sample of 20 is read back byte for byte); the
// bucket holds exactly those dumps and their .json; every file is deleted
// from the node. The CoreDumps are deleted afterwards (and with them the
// stored objects), so that later tests do not page through them.
func TestFaultTenThousandFiles(t *testing.T) {
	g := NewWithT(t)
	count := faultScale(1000, 10000)
	n := newNode(t, "fault-mass-crash", nodeOpts{})
	t.Cleanup(func() { nfDeleteDumps(t, n) })

	files := make(map[string]string, count)
	data := make(map[string][]byte, count)
	names := make([]string, 0, count)
	for i := range count {
		name := coreName(fmt.Sprintf("mass-%d", i%500), "mass", int64(20000+i))
		b := coreLike(5000+i, 4096+(i%8)*512)
		must(t, os.WriteFile(filepath.Join(n.dir, ".tmp-"+name), b, 0o600))
		files[name], data[name] = sha256Hex(b), b
		names = append(names, name)
	}
	cpu := nfCPU(n)
	start := time.Now()
	for _, name := range names {
		must(t, os.Rename(filepath.Join(n.dir, ".tmp-"+name), filepath.Join(n.dir, name)))
	}
	dropped := time.Now()
	t.Logf("%d files renamed into place in %s", count, dropped.Sub(start).Round(time.Millisecond))

	// How long until every file has its CoreDump (by the policy's count,
	// which nfSettle checks against the CoreDumps), as a figure of its own.
	var created time.Duration
	g.Eventually(func(g Gomega) {
		var p coredogv1.CoreDumpPolicy
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: n.policy}, &p)).To(Succeed())
		g.Expect(p.Status.Dumps.Captured).To(BeNumerically(">=", count))
		created = time.Since(dropped)
	}).WithTimeout(faultScale(3*time.Minute, 10*time.Minute)).WithPolling(250 * time.Millisecond).Should(Succeed())
	res := nfSettle(t, n, files, nil, dropped, faultScale(4*time.Minute, 45*time.Minute))
	nfRequireClean(t, res)
	t.Logf("CPU time from the drop until all were Uploaded: %s", nfCPUSince(n, cpu))
	t.Logf("all %d CoreDumps created %s after the drop; all Uploaded after %s (%.0f dumps/s end to end)",
		count, created.Round(time.Millisecond), res.converged.Round(time.Millisecond), float64(count)/res.converged.Seconds())
	m, err := n.metricsOf()
	must(t, err)
	t.Logf("agent: files found by watch %v, by rescan %v, by poll %v", m[`coredog_agent_files_found_total{source="Watch"}`],
		m[`coredog_agent_files_found_total{source="Rescan"}`], m[`coredog_agent_files_found_total{source="Poll"}`])
	rng := rand.New(rand.NewPCG(uint64(count), 7))
	for range 20 {
		name := names[rng.IntN(len(names))]
		cd := res.final[name]
		expectStoredBytes(t, n.bucket, &cd, data[name])
	}

	recordFault(t, faultRow{
		Group:    "node",
		Injected: fmt.Sprintf("%d small files (4–8 KiB) renamed into the directory at once", count),
		Checked:  fmt.Sprintf("one CoreDump per file, each Uploaded with its file's SHA-256 (20 read back byte for byte); nothing else in the bucket; all files deleted from the node; all CoreDumps existed %s after the drop", created.Round(100*time.Millisecond)),
		Dumps:    count, Lost: res.lost, Duplicated: res.duplicated, LeftOnNode: res.left,
		Converged: res.converged,
	})
}

// nfDeleteDumps deletes a node's CoreDumps and waits until the manager has
// deleted their stored objects and let them go.
func nfDeleteDumps(t *testing.T, n *node) {
	ctx := context.Background()
	start := time.Now()
	wait := 5 * time.Minute
	if fullFaults() {
		wait = 20 * time.Minute
	}
	// One collection DELETE of thousands of CoreDumps can outlast the API
	// server's request timeout (60 s); what it did not get to is deleted by
	// the next one.
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Second) {
		err := k8s.DeleteAllOf(ctx, &coredogv1.CoreDump{}, client.InNamespace(ns),
			client.MatchingLabels{coredogv1.LabelPolicy: coredogv1.LabelValue(n.policy)})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("deleting the CoreDumps of %s: %v", n.policy, err)
			return
		}
		t.Logf("deleting the CoreDumps of %s: %v; again", n.policy, err)
	}
	for deadline := time.Now().Add(wait); ; time.Sleep(time.Second) {
		// The policy's count first: listing what is left costs more.
		var p coredogv1.CoreDumpPolicy
		if err := k8s.Get(ctx, client.ObjectKey{Name: n.policy}, &p); err == nil && p.Status.Dumps.Captured > 0 && time.Now().Before(deadline) {
			continue
		}
		cds, err := nfDumps(ctx, n)
		if err == nil && len(cds) == 0 {
			t.Logf("the CoreDumps of %s and their stored objects were deleted in %s", n.policy, time.Since(start).Round(time.Millisecond))
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("the CoreDumps of %s were not all gone %s after their deletion (%d left, %v)", n.policy, wait, len(cds), err)
			return
		}
	}
}

// TestFaultCrashLoop injects a crash loop: one pod's program crashes again
// and again (real kernel cores, renamed into the directory under the pod's
// hostname), every 600 ms for 60 s, 100 dumps a minute (short form: every
// 300 ms for 15 s), under a policy that stores 5 dumps per 20 s (short: 3
// per 5 s) and keeps at most 1 MiB of cores on the node, about two of
// these cores. The directory is sampled every 50 ms throughout. It checks:
// every crash gets one CoreDump that ends Uploaded, or Skipped as Throttled
// or QuotaExceeded; no window of the policy's length holds more Uploaded
// dumps than its count, and at least count are Uploaded; the policy's
// status counters and the agent's metrics agree with the CoreDumps; the
// bytes of admitted cores on the node (files whose CoreDump exists) never
// exceed maxNodeUsage; every file is deleted from the node.
func TestFaultCrashLoop(t *testing.T) {
	g := NewWithT(t)
	period := faultScale(300*time.Millisecond, 600*time.Millisecond)
	length := faultScale(15*time.Second, 60*time.Second)
	limit := faultScale[int32](3, 5)
	window := faultScale(5*time.Second, 20*time.Second)
	maxUsage := resource.MustParse("1Mi")

	n := newNode(t, "fault-crash-loop", nodeOpts{noPolicy: true, agentArgs: []string{"--max-node-usage=" + maxUsage.String()}})
	p := n.policyObject()
	p.Spec.Limits = coredogv1.LimitsSpec{
		MaxNodeUsage: &maxUsage,
		MinNodeFree:  "0%",
		RateLimit:    coredogv1.RateLimitSpec{Count: new(limit), Window: &metav1.Duration{Duration: window}},
	}
	must(t, k8s.Create(context.Background(), p))
	n.startAgent()
	t.Cleanup(func() { nfDeleteDumps(t, n) })
	pod := createPod(t, "fault-loop", "loop-0", n.name, "containerd://"+randomHex(32))

	// The sampler: admitted bytes are those of files whose CoreDump exists
	// (the agent admits a file before it creates its CoreDump, and removes
	// a refused one before that too); the CoreDumps are listed first.
	var (
		mu                  sync.Mutex
		maxAdmitted, maxDir int64
		samples             int
		stopSampling        = make(chan struct{})
		samplerDone         = make(chan struct{})
	)
	go func() {
		defer close(samplerDone)
		for {
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
			cds, err := nfDumps(context.Background(), n)
			if err != nil {
				continue
			}
			has := make(map[string]bool, len(cds))
			for _, cd := range cds {
				has[cd.Spec.FileName] = true
			}
			entries, err := os.ReadDir(n.dir)
			if err != nil {
				continue
			}
			var admitted, total int64
			for _, e := range entries {
				fi, err := e.Info()
				if err != nil || !fi.Mode().IsRegular() {
					continue
				}
				total += fi.Size()
				if has[e.Name()] {
					admitted += fi.Size()
				}
			}
			mu.Lock()
			maxAdmitted, maxDir = max(maxAdmitted, admitted), max(maxDir, total)
			samples++
			mu.Unlock()
		}
	}()
	stopSampler := sync.OnceFunc(func() { close(stopSampling); <-samplerDone })
	t.Cleanup(stopSampler)

	files := map[string]string{}
	var coreSize int
	tick := time.NewTicker(period)
	start := time.Now()
	for time.Since(start) < length {
		data, c := crash(t)
		coreSize = len(data)
		name := coreName(pod.Name, "crashy", int64(c.PID))
		must(t, os.Rename(c.Core, filepath.Join(n.dir, name)))
		files[name] = sha256Hex(data)
		<-tick.C
	}
	tick.Stop()
	looped := time.Since(start)
	lastCrash := time.Now()
	t.Logf("%d crashes in %s (%.0f a minute), cores of %d bytes", len(files), looped.Round(time.Millisecond), float64(len(files))/looped.Minutes(), coreSize)

	accept := func(cd *coredogv1.CoreDump) bool {
		return cd.Status.Phase == coredogv1.PhaseUploaded || (cd.Status.Phase == coredogv1.PhaseSkipped &&
			(cd.Status.Reason == coredogv1.ReasonThrottled || cd.Status.Reason == coredogv1.ReasonQuotaExceeded))
	}
	res := nfSettle(t, n, files, accept, lastCrash, 2*uploadTimeout)
	stopSampler()
	nfRequireClean(t, res)

	var uploaded []time.Time
	var throttled, refused int
	for _, cd := range res.final {
		switch {
		case cd.Status.Phase == coredogv1.PhaseUploaded:
			uploaded = append(uploaded, cd.CreationTimestamp.Time)
			g.Expect(cd.Status.Pod).NotTo(BeNil())
			g.Expect(cd.Status.Pod.Name).To(Equal(pod.Name), "attributed to the looping pod")
		case cd.Status.Reason == coredogv1.ReasonThrottled:
			throttled++
		default:
			refused++
			g.Expect(cd.Spec.RefusedReason).To(Equal(coredogv1.ReasonQuotaExceeded))
		}
	}
	sort.Slice(uploaded, func(i, j int) bool { return uploaded[i].Before(uploaded[j]) })
	worst := 0
	for i, t0 := range uploaded {
		in := 0
		for _, t1 := range uploaded[i:] {
			if t1.Sub(t0) < window {
				in++
			}
		}
		worst = max(worst, in)
	}
	t.Logf("Uploaded %d, Throttled %d, QuotaExceeded %d; at most %d Uploaded within any %s (limit %d)", len(uploaded), throttled, refused, worst, window, limit)
	g.Expect(worst).To(BeNumerically("<=", limit), "Uploaded dumps within one rate-limit window")
	g.Expect(len(uploaded)).To(BeNumerically(">=", int(limit)), "the rate limit should let its count through")
	g.Expect(throttled).To(BeNumerically(">", 0), "a crash loop this fast should be throttled")

	mu.Lock()
	t.Logf("the directory, sampled %d times: admitted cores at most %d bytes (maxNodeUsage %d), all files at most %d bytes", samples, maxAdmitted, maxUsage.Value(), maxDir)
	g.Expect(samples).To(BeNumerically(">", int(length/(500*time.Millisecond))), "the sampler should have run throughout")
	g.Expect(maxAdmitted).To(BeNumerically("<=", maxUsage.Value()), "admitted cores on the node")
	mu.Unlock()

	total := int64(len(files))
	g.Eventually(func(g Gomega) {
		var got coredogv1.CoreDumpPolicy
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: n.policy}, &got)).To(Succeed())
		g.Expect(got.Status.Dumps).To(Equal(coredogv1.DumpCounters{
			Captured: total, Uploaded: int64(len(uploaded)), Skipped: int64(throttled + refused),
		}))
	}).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).Should(Succeed(), "the policy's dump counters")
	m, err := n.metricsOf()
	must(t, err)
	found := m[`coredog_agent_files_found_total{source="Watch"}`] + m[`coredog_agent_files_found_total{source="Poll"}`] + m[`coredog_agent_files_found_total{source="Rescan"}`]
	g.Expect(found).To(Equal(float64(total)), "coredog_agent_files_found_total")
	g.Expect(m[`coredog_agent_refused_dumps_total{reason="QuotaExceeded"}`]).To(Equal(float64(refused)), "coredog_agent_refused_dumps_total")
	g.Expect(m["coredog_agent_local_bytes"]).To(BeZero(), "coredog_agent_local_bytes once every dump is done")

	recordFault(t, faultRow{
		Group: "node",
		Injected: fmt.Sprintf("a crash loop of one pod: %d real crashes in %s (%.0f a minute) under a rate limit of %d per %s and maxNodeUsage %s (about %d cores)",
			total, looped.Round(time.Second), float64(total)/looped.Minutes(), limit, window, maxUsage.String(), maxUsage.Value()/int64(max(coreSize, 1))),
		Checked: fmt.Sprintf("every crash ends Uploaded (%d), Throttled (%d) or QuotaExceeded (%d); at most %d Uploaded in any %s window; policy status counters and agent metrics match; admitted cores on the node peaked at %d KiB of %d KiB",
			len(uploaded), throttled, refused, worst, window, maxAdmitted>>10, maxUsage.Value()>>10),
		Dumps: int(total), Lost: res.lost, Duplicated: res.duplicated, LeftOnNode: res.left,
		Converged: res.converged,
	})
}

// nfCPU reads the CPU time (user and system) of the suite's processes, to
// say what a row cost.
func nfCPU(n *node) map[string]time.Duration {
	pids := map[string]int{"manager": manager.Cmd.Process.Pid, "agent": n.agent.Cmd.Process.Pid, "versitygw": s3srv.proc.Cmd.Process.Pid}
	for _, comm := range []string{"kube-apiserver", "etcd"} {
		if pid, err := localcluster.ChildPID(comm); err == nil {
			pids[comm] = pid
		}
	}
	out := map[string]time.Duration{}
	for name, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime are fields 14 and 15.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		if len(f) < 13 {
			continue
		}
		var u, s int64
		fmt.Sscan(f[11], &u)
		fmt.Sscan(f[12], &s)
		out[name] = time.Duration(u+s) * time.Second / 100 // USER_HZ
	}
	return out
}

// nfCPUSince formats the CPU time each process used since before.
func nfCPUSince(n *node, before map[string]time.Duration) string {
	after := nfCPU(n)
	var parts []string
	for _, name := range []string{"agent", "manager", "kube-apiserver", "etcd", "versitygw"} {
		parts = append(parts, fmt.Sprintf("%s %.1fs", name, (after[name]-before[name]).Seconds()))
	}
	return strings.Join(parts, ", ")
}
