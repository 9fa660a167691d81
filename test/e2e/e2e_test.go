package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/test/testcrash"
)

// TestCrashAttributedByHostname injects a real kernel core (the crasher run
// with RLIMIT_CORE raised) renamed into the watched directory under the
// policy's fileNamePattern, with %h = the name of a pod on the agent's node.
// It checks: exactly one CoreDump, with the crash's facts (executable, PID,
// signal, ELF notes); Uploaded; attributed to that pod (resolvedBy
// Hostname); the stored object is the core byte for byte after zstd
// decompression, with its .json next to it and nothing else in the bucket;
// a CoreDumped event on the pod; the node's copy deleted.
func TestCrashAttributedByHostname(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "by-hostname", nodeOpts{})
	pod := createPod(t, "shop", "web-0", n.name, "containerd://"+randomHex(32))
	data, c := crash(t)
	name := coreName("web-0", "crashy", int64(c.PID))
	must(t, os.Rename(c.Core, filepath.Join(n.dir, name)))

	cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	s := cd.Spec
	g.Expect(s.NodeName).To(Equal(n.name))
	g.Expect(s.Size).To(Equal(int64(len(data))))
	g.Expect(s.Process.Executable).To(Equal("crashy"))
	g.Expect(s.Process.Hostname).To(Equal("web-0"))
	g.Expect(s.Process.HostPID).To(Equal(int64(c.PID)))
	g.Expect(s.Process.Signal).To(Equal(int32(11)))
	g.Expect(s.Process.SignalName).To(Equal("SIGSEGV"))
	g.Expect(s.ELF).NotTo(BeNil())
	if !c.ViaGDB {
		g.Expect(s.ELF.CrashModule).To(Equal("crashy"))
		g.Expect(s.ELF.FaultAddress).To(Equal("0x0"))
	}
	g.Expect(s.ParseError).To(BeEmpty())

	ref := cd.Status.Pod
	g.Expect(ref).NotTo(BeNil())
	g.Expect(ref.ResolvedBy).To(Equal(coredogv1.ResolvedByHostname))
	g.Expect(ref.Namespace).To(Equal("shop"))
	g.Expect(ref.Name).To(Equal("web-0"))
	g.Expect(ref.UID).To(Equal(string(pod.UID)))
	g.Expect(ref.Container).To(Equal("app"))
	g.Expect(cd.Labels).To(HaveKeyWithValue(coredogv1.LabelPod, "web-0"))
	g.Expect(cd.Labels).To(HaveKeyWithValue(coredogv1.LabelNamespace, "shop"))
	g.Expect(cd.Status.Storage.Key).To(HavePrefix("shop/web-0/"))

	expectStoredBytes(t, n.bucket, cd, data)
	expectBucket(t, n.bucket, []coredogv1.CoreDump{*cd})
	g.Eventually(func(g Gomega) {
		ev := coreDumpedEvent(g, pod)
		g.Expect(ev).NotTo(BeNil(), "a CoreDumped event on pod shop/web-0")
		g.Expect(ev.Related).NotTo(BeNil())
		g.Expect(ev.Related.Name).To(Equal(cd.Name))
		g.Expect(ev.Note).To(And(ContainSubstring("SIGSEGV"), ContainSubstring(cd.Status.Storage.URL)))
	}).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	n.waitGone(name)
	g.Consistently(func(g Gomega) { g.Expect(n.dumps(g)).To(HaveLen(1)) }).WithTimeout(time.Second).Should(Succeed())
}

// TestCrashAttributedByContainerID injects a real kernel core under a name
// whose %h matches no pod, while <proc-root>/<%P>/cgroup holds a containerd
// cgroup v2 path whose container ID is in a pod's container status. The
// PID directory exists when the file appears and is removed afterwards, as
// the dying process would be. It checks: the agent does not capture the
// file while the PID exists; then one CoreDump whose spec.containerID is
// that container's, attributed to the pod with resolvedBy ContainerID,
// Uploaded and stored byte for byte; the node's copy deleted.
func TestCrashAttributedByContainerID(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "by-container-id", nodeOpts{})
	id := randomHex(32)
	pod := createPod(t, "shop", "api-7f9c", n.name, "containerd://"+id)
	data, c := crash(t)

	pidDir := filepath.Join(n.procRoot, fmt.Sprint(c.PID))
	must(t, os.MkdirAll(pidDir, 0o755))
	podSlice := strings.ReplaceAll(string(pod.UID), "-", "_")
	cgroup := fmt.Sprintf("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod%s.slice/cri-containerd-%s.scope\n", podSlice, id)
	must(t, os.WriteFile(filepath.Join(pidDir, "cgroup"), []byte(cgroup), 0o644))
	name := coreName("not-a-pod-hostname", "crashy", int64(c.PID))
	must(t, os.Rename(c.Core, filepath.Join(n.dir, name)))

	// The dumping process still exists: the kernel may still be writing.
	g.Consistently(func(g Gomega) { g.Expect(n.dumps(g)).To(BeEmpty()) }).
		WithTimeout(1500*time.Millisecond).WithPolling(100*time.Millisecond).Should(Succeed(), "captured while its process existed")
	must(t, os.RemoveAll(pidDir))

	cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	g.Expect(cd.Spec.ContainerID).To(Equal("containerd://" + id))
	g.Expect(cd.Spec.Process.Hostname).To(Equal("not-a-pod-hostname"))
	ref := cd.Status.Pod
	g.Expect(ref).NotTo(BeNil())
	g.Expect(ref.ResolvedBy).To(Equal(coredogv1.ResolvedByContainerID))
	g.Expect(ref.Namespace).To(Equal("shop"))
	g.Expect(ref.Name).To(Equal("api-7f9c"))
	g.Expect(ref.UID).To(Equal(string(pod.UID)))
	g.Expect(ref.Container).To(Equal("app"))
	expectStoredBytes(t, n.bucket, cd, data)
	expectBucket(t, n.bucket, []coredogv1.CoreDump{*cd})
	n.waitGone(name)
}

// TestRawKernelCore injects a core the kernel writes straight into the
// watched directory: the crasher runs with its working directory there, and
// this machine's core_pattern is "core". The name carries no pattern fields
// and no PID, so completeness rests on the settle time. It checks: one
// CoreDump, described from the ELF notes, Uploaded with resolvedBy
// Unresolved (nothing ties it to a pod) and stored byte for byte; the
// node's copy deleted.
func TestRawKernelCore(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "raw-core", nodeOpts{settle: time.Second})
	c, err := testcrash.Run(crasherBin, n.dir, t.Logf)
	must(t, err)
	// The agent waits a settle time before it takes the file, and deletes
	// it only once it is Uploaded, so it is still there to read.
	data, err := os.ReadFile(c.Core)
	must(t, err)
	name := filepath.Base(c.Core)
	if !c.ViaGDB && name != "core" && name != fmt.Sprintf("core.%d", c.PID) {
		t.Fatalf("unexpected core file name %s", name)
	}

	cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	g.Expect(cd.Spec.Size).To(Equal(int64(len(data))))
	g.Expect(cd.Spec.Process.Executable).To(Equal("crashy"))
	g.Expect(cd.Spec.Process.SignalName).To(Equal("SIGSEGV"))
	g.Expect(cd.Spec.Process.Hostname).To(BeEmpty())
	g.Expect(cd.Status.Pod).NotTo(BeNil())
	g.Expect(cd.Status.Pod.ResolvedBy).To(Equal(coredogv1.ResolvedByUnresolved))
	g.Expect(cd.Status.Pod.Name).To(BeEmpty())
	g.Expect(cd.Labels).NotTo(HaveKey(coredogv1.LabelPod))
	expectStoredBytes(t, n.bucket, cd, data)
	expectBucket(t, n.bucket, []coredogv1.CoreDump{*cd})
	n.waitGone(name)
}

// TestFilesPresentAtStart injects files that are already in the directory
// when the agent starts: the agent captures one file, is stopped, three
// files are dropped, and it is started again. It checks: each of the three
// is captured exactly once with detectedBy Rescan and Uploaded byte for
// byte; the file captured before the restart is not captured again; the
// bucket holds exactly the four dumps and their metadata.
func TestFilesPresentAtStart(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "rescan", nodeOpts{})
	before := coreName("svc-0", "svc", 4000)
	n.drop(before, coreLike(0, 96<<10))
	cdBefore := n.waitPhase(before, coredogv1.PhaseUploaded, uploadTimeout)
	n.waitGone(before)

	must(t, n.agent.Stop(stopGrace))
	data := map[string][]byte{}
	var names []string
	for i := range 3 {
		name := coreName("svc-0", "svc", int64(4001+i))
		data[name] = coreLike(i+1, (64+i)<<10)
		n.drop(name, data[name])
		names = append(names, name)
	}
	n.startAgent()

	got := n.waitAllUploaded(names, uploadTimeout)
	all := []coredogv1.CoreDump{*cdBefore}
	for _, name := range names {
		cd := got[name]
		g.Expect(cd.Spec.DetectedBy).To(Equal(coredogv1.DetectedByRescan), name)
		expectStoredBytes(t, n.bucket, &cd, data[name])
		all = append(all, cd)
		n.waitGone(name)
	}
	g.Consistently(func(g Gomega) { g.Expect(n.dumps(g)).To(HaveLen(4)) }).WithTimeout(2 * time.Second).Should(Succeed())
	expectBucket(t, n.bucket, all)
}

// TestPausingWriter injects a writer that writes half a file under its
// final name, pauses 1.5 s, and writes the rest, with a settle time of 2 s
// and no PID to check. It checks: nothing is captured mid-write; then
// exactly one CoreDump, with the full size, Uploaded, stored bytes equal to
// the whole file; no second CoreDump follows.
func TestPausingWriter(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "slow-writer", nodeOpts{settle: 2 * time.Second, noProcRoot: true})
	name := coreName("writer-0", "writer", 4242)
	data := coreLike(7, 4<<20)
	f, err := os.OpenFile(filepath.Join(n.dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	must(t, err)
	half := len(data) / 2
	_, err = f.Write(data[:half])
	must(t, err)
	time.Sleep(1500 * time.Millisecond)
	g.Expect(n.dumps(g)).To(BeEmpty(), "captured a file that was still being written")
	_, err = f.Write(data[half:])
	must(t, err)
	must(t, f.Close())

	cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	g.Expect(cd.Spec.Size).To(Equal(int64(len(data))))
	expectStoredBytes(t, n.bucket, cd, data)
	n.waitGone(name)
	g.Consistently(func(g Gomega) { g.Expect(n.dumps(g)).To(HaveLen(1)) }).WithTimeout(2 * time.Second).Should(Succeed())
	expectBucket(t, n.bucket, []coredogv1.CoreDump{*cd})
}

// TestFiftyCrashesAtOnce injects 50 core-like files dropped within a
// second. It checks: 50 CoreDumps, one per file, all with distinct names
// and all Uploaded; each stored object equals its file; the bucket holds
// exactly 50 dumps and 50 .json files, none twice; the node's copies are
// deleted; no further CoreDump appears.
func TestFiftyCrashesAtOnce(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "burst", nodeOpts{})
	const count = 50
	data := map[string][]byte{}
	var names []string
	for i := range count {
		name := coreName(fmt.Sprintf("worker-%d", i), "worker", int64(7000+i))
		data[name] = coreLike(100+i, 32<<10+i<<10)
		must(t, os.WriteFile(filepath.Join(n.dir, ".tmp-"+name), data[name], 0o600))
		names = append(names, name)
	}
	start := time.Now()
	for _, name := range names {
		must(t, os.Rename(filepath.Join(n.dir, ".tmp-"+name), filepath.Join(n.dir, name)))
	}
	dropped := time.Since(start)
	g.Expect(dropped).To(BeNumerically("<", time.Second))

	got := n.waitAllUploaded(names, 2*uploadTimeout)
	t.Logf("%d files dropped within %s; all Uploaded %s after the first", count, dropped.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	seen := map[string]bool{}
	var all []coredogv1.CoreDump
	for _, name := range names {
		cd := got[name]
		g.Expect(seen[cd.Name]).To(BeFalse(), "CoreDump name %s twice", cd.Name)
		seen[cd.Name] = true
		expectStoredBytes(t, n.bucket, &cd, data[name])
		all = append(all, cd)
	}
	expectBucket(t, n.bucket, all)
	for _, name := range names {
		n.waitGone(name)
	}
	g.Consistently(func(g Gomega) { g.Expect(n.dumps(g)).To(HaveLen(count)) }).WithTimeout(2 * time.Second).Should(Succeed())
}

// TestPollOnlyMode injects files into the directory of an agent that does
// not watch (--disable-watch, poll interval 1 s). It checks: the agent's
// Lease reports mode "poll"; each file becomes a CoreDump with detectedBy
// Poll within the poll interval plus a little (the measured latencies are
// logged), and is Uploaded.
func TestPollOnlyMode(t *testing.T) {
	g := NewWithT(t)
	const interval = time.Second
	n := newNode(t, "poll-only", nodeOpts{disableWatch: true, poll: interval})
	g.Eventually(func(g Gomega) {
		var lease coordinationv1.Lease
		g.Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: agentlease.Name(n.policy, n.name)}, &lease)).To(Succeed())
		g.Expect(lease.Annotations).To(HaveKeyWithValue(agentlease.AnnotationMode, "poll"))
	}).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())

	var all []coredogv1.CoreDump
	var latencies []time.Duration
	for i := range 4 {
		name := coreName("poller-0", "poller", int64(8000+i))
		data := coreLike(200+i, 48<<10)
		n.drop(name, data)
		dropped := time.Now()
		var latency time.Duration
		g.Eventually(func(g Gomega) {
			g.Expect(n.dumpsByFile(g)[name]).To(HaveLen(1))
			latency = time.Since(dropped)
		}).WithTimeout(10 * time.Second).WithPolling(10 * time.Millisecond).Should(Succeed())
		latencies = append(latencies, latency)
		cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
		g.Expect(cd.Spec.DetectedBy).To(Equal(coredogv1.DetectedByPoll))
		expectStoredBytes(t, n.bucket, cd, data)
		all = append(all, *cd)
		// Land the next drop elsewhere in the poll period.
		time.Sleep(time.Duration(i+1) * 230 * time.Millisecond)
	}
	t.Logf("poll-only detection latency (file in place → CoreDump exists), poll interval %s: %v", interval, latencies)
	for _, l := range latencies {
		// One interval, plus the confirming look, the API call and this
		// test's own polling; generous because other packages' tests may
		// run at the same time.
		g.Expect(l).To(BeNumerically("<", interval+2*time.Second), "latencies %v", latencies)
	}
	expectBucket(t, n.bucket, all)
}

// TestKillNineMidUpload injects two `kill -9`s, each on a 512 MiB core-like
// dump (logical size; one 4 KiB page of random data in 8, the rest holes,
// so 64 MiB to compress and store): the agent is killed while it serves the
// first, and restarted; the manager is killed while it uploads the second,
// and restarted. It checks: each dump ends Uploaded, exactly one CoreDump
// each; the stored objects decompress to the files' exact size and
// SHA-256; the bucket lists exactly the two dumps and their metadata; the
// upload the dead agent broke was aborted (no multipart upload left); the
// node's files are removed. Upload times are logged.
func TestKillNineMidUpload(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "kill-nine", nodeOpts{})
	t.Cleanup(func() {
		if manager.Exited() {
			if err := startManager(); err != nil {
				t.Errorf("restarting the manager: %v", err)
			}
		}
	})
	const size = 512 << 20
	const every = 8
	const midway = 16 << 20 // compressed bytes sent before the kill, of about 64 MiB

	// The agent dies while it serves dump A.
	nameA := coreName("big-0", "big", 9001)
	tmp := filepath.Join(n.dir, ".tmp-"+nameA)
	shaA := makeSparseCore(t, tmp, size, every, 1)
	must(t, os.Rename(tmp, filepath.Join(n.dir, nameA)))
	served := n.waitServing(midway)
	n.agent.Kill()
	t.Logf("killed the agent (SIGKILL) after it had sent %.1f MiB of dump A", served/(1<<20))
	cd := n.dumpsByFile(g)[nameA]
	g.Expect(cd).To(HaveLen(1))
	g.Expect(cd[0].Status.Phase).To(Equal(coredogv1.PhaseUploading), "the upload finished before the kill: %s", cd[0].Status.Message)
	_, err := os.Stat(filepath.Join(n.dir, nameA))
	must(t, err)

	restarted := time.Now()
	n.startAgent()
	cdA := n.waitPhase(nameA, coredogv1.PhaseUploaded, 2*uploadTimeout)
	t.Logf("dump A Uploaded %s after the agent restarted (attempts %d)", time.Since(restarted).Round(time.Millisecond), cdA.Status.Attempts)
	g.Expect(cdA.Status.Attempts).To(BeNumerically(">=", 2), "the first attempt should have failed with the agent")
	expectStored(t, n.bucket, cdA, size, shaA)
	n.waitGone(nameA)
	g.Eventually(func() []string { return multipartUploads(t, n.bucket) }).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).
		Should(BeEmpty(), "the manager should abort the multipart upload the agent's death broke")

	// The manager dies while it uploads dump B.
	nameB := coreName("big-1", "big", 9002)
	tmp = filepath.Join(n.dir, ".tmp-"+nameB)
	shaB := makeSparseCore(t, tmp, size, every, 2)
	m, err := n.metricsOf()
	must(t, err)
	base, abortedBefore := m[servedBytesMetric], m[abortedMetric]
	must(t, os.Rename(tmp, filepath.Join(n.dir, nameB)))
	served = n.waitServing(base + midway)
	manager.Kill()
	t.Logf("killed the manager (SIGKILL) after the agent had sent %.1f MiB of dump B", (served-base)/(1<<20))
	cd = n.dumpsByFile(g)[nameB]
	g.Expect(cd).To(HaveLen(1))
	g.Expect(cd[0].Status.Phase).To(Equal(coredogv1.PhaseUploading), "the upload finished before the kill: %s", cd[0].Status.Message)

	restarted = time.Now()
	must(t, startManager())
	cdB := n.waitPhase(nameB, coredogv1.PhaseUploaded, 2*uploadTimeout)
	t.Logf("dump B Uploaded %s after the manager restarted (attempts %d)", time.Since(restarted).Round(time.Millisecond), cdB.Status.Attempts)
	expectStored(t, n.bucket, cdB, size, shaB)
	n.waitGone(nameB)
	m, err = n.metricsOf()
	must(t, err)
	g.Expect(m[abortedMetric]).To(BeNumerically(">", abortedBefore), "the agent should have seen the dead manager's download break")

	byFile := n.dumpsByFile(g)
	g.Expect(byFile).To(HaveLen(2))
	expectBucket(t, n.bucket, []coredogv1.CoreDump{*cdA, *cdB})
	if left := multipartUploads(t, n.bucket); len(left) > 0 {
		t.Logf("multipart uploads left in progress by the killed manager (not objects; a bucket lifecycle rule aborts them): %v", left)
	}
	for _, d := range servedDurations(n) {
		t.Logf("agent served a 512 MiB dump in full: %s", d)
	}
}

// servedDurations returns what the agent logged for each complete download.
func servedDurations(n *node) []string {
	data, err := os.ReadFile(n.agent.LogPath)
	if err != nil {
		return nil
	}
	var out []string
	// zap writes durations as seconds.
	re := regexp.MustCompile(`"duration":([0-9.]+)`)
	for line := range strings.SplitSeq(string(data), "\n") {
		if strings.Contains(line, "Served core dump") {
			if m := re.FindStringSubmatch(line); m != nil {
				if s, err := strconv.ParseFloat(m[1], 64); err == nil {
					out = append(out, time.Duration(s*float64(time.Second)).Round(time.Millisecond).String())
				}
			}
		}
	}
	return out
}

// TestS3ServerDown injects an S3 outage: versitygw is killed while it
// receives a 256 MiB dump (64 MiB of data; killed once the multipart upload
// shows in the bucket), three more dumps are dropped
// while it is down, and it is started again on the same port and directory
// 30 s later. It checks: every dump is held back with a failed attempt
// meanwhile, and ends Uploaded, exactly once, with the stored objects
// equal to the files; the bucket lists exactly the four dumps and their
// metadata; the node's files are removed.
func TestS3ServerDown(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "s3-outage", nodeOpts{})
	t.Cleanup(func() {
		if s3srv.proc.Exited() {
			if err := s3srv.start(); err != nil {
				t.Errorf("restarting versitygw: %v", err)
			}
		}
	})
	big := coreName("big-2", "big", 9101)
	tmp := filepath.Join(n.dir, ".tmp-"+big)
	const bigSize = 256 << 20
	bigSHA := makeSparseCore(t, tmp, bigSize, 4, 3)
	must(t, os.Rename(tmp, filepath.Join(n.dir, big)))
	// Killed while it holds the big dump's multipart upload open.
	g.Eventually(func() []string { return multipartUploads(t, n.bucket) }).
		WithTimeout(uploadTimeout).WithPolling(10 * time.Millisecond).ShouldNot(BeEmpty())
	s3srv.proc.Kill()
	down := time.Now()
	cds := n.dumpsByFile(g)[big]
	g.Expect(cds).To(HaveLen(1))
	g.Expect(cds[0].Status.Phase).To(Equal(coredogv1.PhaseUploading), "the upload finished before the kill")

	data := map[string][]byte{}
	names := []string{big}
	for i := range 3 {
		name := coreName("small-0", "small", int64(9200+i))
		data[name] = coreLike(300+i, 128<<10)
		n.drop(name, data[name])
		names = append(names, name)
	}
	g.Eventually(func(g Gomega) {
		byFile := n.dumpsByFile(g)
		for _, name := range names {
			g.Expect(byFile[name]).To(HaveLen(1), name)
			cd := byFile[name][0]
			g.Expect(cd.Status.Phase).To(Equal(coredogv1.PhaseUploading), name)
			g.Expect(cd.Status.Attempts).To(BeNumerically(">=", 1), "%s: %s", name, cd.Status.Message)
		}
	}).WithTimeout(25 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	time.Sleep(time.Until(down.Add(30 * time.Second)))
	must(t, s3srv.start())
	back := time.Now()
	t.Logf("versitygw was down for %s", back.Sub(down).Round(time.Millisecond))

	got := n.waitAllUploaded(names, 2*uploadTimeout)
	t.Logf("all %d dumps Uploaded %s after versitygw came back", len(names), time.Since(back).Round(time.Millisecond))
	var all []coredogv1.CoreDump
	for _, name := range names {
		cd := got[name]
		if name == big {
			expectStored(t, n.bucket, &cd, bigSize, bigSHA)
		} else {
			expectStoredBytes(t, n.bucket, &cd, data[name])
		}
		all = append(all, cd)
		n.waitGone(name)
	}
	expectBucket(t, n.bucket, all)
	if left := multipartUploads(t, n.bucket); len(left) > 0 {
		t.Logf("multipart uploads left in progress by the interrupted upload: %v", left)
	}
}

// TestAPIServerRestart injects a kube-apiserver restart (same address and
// certificates; etcd keeps running) while the agent finds new files: three
// files are dropped while it is down and two right after it is back. It
// checks: the agent found files while the API server was away (its log says
// it is retrying); afterwards every file has exactly one CoreDump, Uploaded
// and stored byte for byte; the bucket holds exactly those dumps; the
// node's files are removed.
func TestAPIServerRestart(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "api-restart", nodeOpts{})
	first := coreName("app-0", "app", 9300)
	data := map[string][]byte{first: coreLike(400, 64<<10)}
	n.drop(first, data[first])
	n.waitPhase(first, coredogv1.PhaseUploaded, uploadTimeout)
	names := []string{first}

	stopped := time.Now()
	must(t, cp.StopAPIServer())
	up := false
	t.Cleanup(func() {
		if !up {
			if err := cp.StartAPIServer(); err != nil {
				t.Errorf("starting the API server again: %v", err)
			}
		}
	})
	t.Logf("kube-apiserver stopped in %s", time.Since(stopped).Round(time.Millisecond))
	for i := range 3 {
		name := coreName("app-0", "app", int64(9301+i))
		data[name] = coreLike(401+i, 64<<10)
		n.drop(name, data[name])
		names = append(names, name)
		time.Sleep(500 * time.Millisecond)
	}
	g.Eventually(func() string {
		b, _ := os.ReadFile(n.agent.LogPath)
		return string(b)
	}).WithTimeout(10*time.Second).WithPolling(200*time.Millisecond).Should(ContainSubstring("Cannot create the CoreDump yet"),
		"the agent should find the files while the API server is away")
	for _, name := range names[1:] {
		_, err := os.Stat(filepath.Join(n.dir, name))
		must(t, err)
	}
	host := cp.Config.Host
	must(t, cp.StartAPIServer())
	up = true
	t.Logf("kube-apiserver was down for %s", time.Since(stopped).Round(time.Millisecond))
	g.Expect(cp.Config.Host).To(Equal(host))
	for i := range 2 {
		name := coreName("app-0", "app", int64(9310+i))
		data[name] = coreLike(410+i, 64<<10)
		n.drop(name, data[name])
		names = append(names, name)
	}

	got := n.waitAllUploaded(names, 2*uploadTimeout)
	var all []coredogv1.CoreDump
	for _, name := range names {
		cd := got[name]
		expectStoredBytes(t, n.bucket, &cd, data[name])
		all = append(all, cd)
		n.waitGone(name)
	}
	g.Consistently(func(g Gomega) { g.Expect(n.dumps(g)).To(HaveLen(len(names))) }).WithTimeout(2 * time.Second).Should(Succeed())
	expectBucket(t, n.bucket, all)
}

// TestKubectl injects a policy with `kubectl apply -f` (YAML written to a
// file) and a real crash of a pod's process. It checks: kubectl reports the
// policy created; `kubectl get coredumps -n coredog-system` prints the
// columns NAME NAMESPACE POD CONTAINER EXECUTABLE SIGNAL SIZE PHASE AGE
// with the dump's values; `-o wide` adds NODE SIGNATURE LOCATION DUMP MODE
// with the node, the crash signature, the stored object's URL and the dump
// mode.
func TestKubectl(t *testing.T) {
	g := NewWithT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	n := newNode(t, "kubectl", nodeOpts{noPolicy: true})
	manifest := fmt.Sprintf(`apiVersion: coredog.io/v1alpha1
kind: CoreDumpPolicy
metadata:
  name: %s
spec:
  nodeSelector:
    %s: %s
  hostPath: %s
  fileNamePattern: core.%%h.%%e.%%P.%%s.%%t
  detection:
    pollInterval: %s
    settleTime: %s
  storage:
    url: %q
    secretRef:
      name: %s
  limits:
    rateLimit:
      count: 100000
`, n.policy, nodeLabel, n.name, n.dir, n.opts.poll, n.opts.settle, n.storageURL(), s3SecretName)
	path := filepath.Join(t.TempDir(), "policy.yaml")
	must(t, os.WriteFile(path, []byte(manifest), 0o644))
	out, err := cp.RunKubectl(ctx, nil, "apply", "-f", path)
	must(t, err)
	g.Expect(out).To(ContainSubstring("coredumppolicy.coredog.io/kubectl created"))
	n.startAgent()

	createPod(t, "web", "web-1", n.name, "containerd://"+randomHex(32))
	data, c := crash(t)
	name := coreName("web-1", "crashy", int64(c.PID))
	must(t, os.Rename(c.Core, filepath.Join(n.dir, name)))
	cd := n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	expectStoredBytes(t, n.bucket, cd, data)

	selector := coredogv1.LabelPolicy + "=" + n.policy
	out, err = cp.RunKubectl(ctx, nil, "get", "coredumps", "-n", ns, "-l", selector)
	must(t, err)
	t.Logf("kubectl get coredumps:\n%s", out)
	header, rows := table(out)
	g.Expect(header).To(Equal([]string{"NAME", "NAMESPACE", "POD", "CONTAINER", "EXECUTABLE", "SIGNAL", "SIZE", "PHASE", "AGE"}))
	g.Expect(rows).To(HaveLen(1))
	g.Expect(rows[0][:8]).To(Equal([]string{cd.Name, "web", "web-1", "app", "crashy", "SIGSEGV", cd.Spec.DisplaySize, "Uploaded"}))
	g.Expect(rows[0][8]).To(MatchRegexp(`^[0-9]+(s|m[0-9]*s?)$`))

	out, err = cp.RunKubectl(ctx, nil, "get", "coredumps", "-n", ns, "-l", selector, "-o", "wide")
	must(t, err)
	t.Logf("kubectl get coredumps -o wide:\n%s", out)
	header, rows = table(out)
	// "DUMP MODE" is one column of two words.
	g.Expect(header).To(Equal([]string{"NAME", "NAMESPACE", "POD", "CONTAINER", "EXECUTABLE", "SIGNAL", "SIZE", "PHASE", "AGE", "NODE", "SIGNATURE", "LOCATION", "DUMP", "MODE"}))
	g.Expect(rows).To(HaveLen(1))
	g.Expect(rows[0][:8]).To(Equal([]string{cd.Name, "web", "web-1", "app", "crashy", "SIGSEGV", cd.Spec.DisplaySize, "Uploaded"}))
	// The test's own crash: root's process, its core owned by root.
	g.Expect(rows[0][9:]).To(Equal([]string{n.name, cd.Spec.Signature, cd.Status.Storage.URL, "User"}))
	g.Expect(cd.Status.Storage.URL).To(HavePrefix("s3://" + n.bucket + "/web/web-1/"))

	// The short name works too.
	out, err = cp.RunKubectl(ctx, nil, "get", "cdump", "-n", ns, "-l", selector, "-o", "name")
	must(t, err)
	g.Expect(strings.TrimSpace(out)).To(Equal("coredump.coredog.io/" + cd.Name))
}

// table splits kubectl's table output into the header and rows of fields.
// No value the suite prints contains white space.
func table(out string) ([]string, [][]string) {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) == 0 {
		return nil, nil
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return strings.Fields(lines[0]), rows
}
