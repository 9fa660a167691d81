package e2e

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	. "github.com/onsi/gomega"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/upload"
	"github.com/coredog/coredog/test/localcluster"
)

// Process faults of the manager and the agent: kill -9 and SIGTERM while a
// dump is in transit. The fx helpers here are shared by the manager,
// storage and leader-election rows of the fault matrix.

// fxFile is a file a fault test put on a node: its name and the size and
// SHA-256 its stored dump must decompress to.
type fxFile struct {
	name string
	size int64
	sha  string
}

// fxDropSparse puts a core-like file of size bytes on the node (one 4 KiB
// page of random data in every `every`, the rest holes, so about
// size/every bytes to compress and store), written under a hidden name and
// renamed into place.
func fxDropSparse(t *testing.T, n *node, name string, size, every int64, seed uint64) fxFile {
	t.Helper()
	tmp := filepath.Join(n.dir, ".tmp-"+name)
	sha := makeSparseCore(t, tmp, size, every, seed)
	must(t, os.Rename(tmp, filepath.Join(n.dir, name)))
	return fxFile{name: name, size: size, sha: sha}
}

// fxDropSmall puts a small core-like file on the node.
func fxDropSmall(t *testing.T, n *node, name string, seed, size int) fxFile {
	t.Helper()
	data := coreLike(seed, size)
	n.drop(name, data)
	return fxFile{name: name, size: int64(size), sha: sha256Hex(data)}
}

// fxOutcome is what fxConverge counted.
type fxOutcome struct {
	lost, duplicated, left int
	converged              time.Duration
	// dumps are the Uploaded CoreDumps by file name.
	dumps map[string]coredogv1.CoreDump
}

// fxConverge waits, at most timeout, until every file has exactly one
// CoreDump, Uploaded, and is gone from the node; the time from since until
// then is the convergence time. Then it counts, without assuming: files
// without an Uploaded CoreDump (lost), extra CoreDumps of a file and
// objects in the bucket that belong to no dump (duplicated), and files
// still on the node (left). It checks each stored dump against its file,
// reports every count other than zero as a test error, and checks that no
// further CoreDump appears.
func fxConverge(t *testing.T, n *node, files []fxFile, since time.Time, timeout time.Duration) fxOutcome {
	t.Helper()
	out := fxOutcome{dumps: map[string]coredogv1.CoreDump{}}
	deadline := since.Add(timeout)
	if d := time.Now().Add(timeout); d.After(deadline) {
		deadline = d
	}
	g := NewWithT(t)
	var reached bool
	for {
		byFile := n.dumpsByFile(g)
		done, stuck := 0, false
		for _, f := range files {
			cds := byFile[f.name]
			if len(cds) != 1 {
				continue
			}
			switch cds[0].Status.Phase {
			case coredogv1.PhaseUploaded:
				if fxGone(n, f.name) {
					done++
				}
			case coredogv1.PhaseFailed, coredogv1.PhaseSkipped:
				stuck = true
			}
		}
		if done == len(files) {
			reached = true
			out.converged = time.Since(since)
			break
		}
		if stuck || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}

	byFile := n.dumpsByFile(g)
	var stored []coredogv1.CoreDump
	for _, f := range files {
		cds := byFile[f.name]
		if len(cds) > 1 {
			out.duplicated += len(cds) - 1
		}
		var up *coredogv1.CoreDump
		for i := range cds {
			if cds[i].Status.Phase == coredogv1.PhaseUploaded {
				up = &cds[i]
			}
		}
		if up == nil {
			out.lost++
			for _, cd := range cds {
				t.Errorf("%s: CoreDump %s is %s (%s): %s", f.name, cd.Name, cd.Status.Phase, cd.Status.Reason, cd.Status.Message)
			}
			if len(cds) == 0 {
				t.Errorf("%s: no CoreDump", f.name)
			}
			continue
		}
		out.dumps[f.name] = *up
		stored = append(stored, *up)
		expectStored(t, n.bucket, up, f.size, f.sha)
		if !fxGone(n, f.name) {
			out.left++
			t.Errorf("%s is still on the node after its dump was stored", f.name)
		}
	}
	want := map[string]bool{}
	for _, cd := range stored {
		want[cd.Status.Storage.Key] = true
		want[metadataKey(cd.Status.Storage.Key)] = true
	}
	var extra []string
	for _, k := range listKeys(t, n.bucket) {
		if !want[k] {
			extra = append(extra, k)
		}
	}
	out.duplicated += len(extra)
	if len(extra) > 0 {
		t.Errorf("bucket %s holds objects of no dump: %v", n.bucket, extra)
	}
	if out.duplicated > 0 || out.lost > 0 {
		t.Errorf("%d files: %d lost, %d duplicated", len(files), out.lost, out.duplicated)
	}
	if !reached {
		t.Errorf("not converged within %s of the end of the fault", timeout)
		out.converged = time.Since(since)
	}
	g.Consistently(func(g Gomega) {
		total := 0
		for _, f := range files {
			total += len(n.dumpsByFile(g)[f.name])
		}
		g.Expect(total).To(Equal(len(files)), "CoreDumps of the test's files")
	}).WithTimeout(time.Second).WithPolling(250 * time.Millisecond).Should(Succeed())
	return out
}

func fxGone(n *node, name string) bool {
	_, err := os.Stat(filepath.Join(n.dir, name))
	return os.IsNotExist(err)
}

// fxRestoreManager starts the suite's manager again at the end of a test
// that stops it, if the test did not.
func fxRestoreManager(t *testing.T) {
	t.Cleanup(func() {
		if manager.Exited() {
			if err := startManager(); err != nil {
				t.Errorf("restarting the manager: %v", err)
			}
		}
	})
}

// fxServed is the agent's served-bytes counter now.
func fxServed(t *testing.T, n *node) float64 {
	t.Helper()
	m, err := n.metricsOf()
	must(t, err)
	return m[servedBytesMetric]
}

// fxPhase is the phase of a file's only CoreDump ("" if it has none or several).
func fxPhase(g Gomega, n *node, name string) coredogv1.Phase {
	cds := n.dumpsByFile(g)[name]
	if len(cds) != 1 {
		return ""
	}
	return cds[0].Status.Phase
}

// fxAbortUploads aborts the multipart uploads a test's kills left in a
// bucket, after counting them, so the bucket can go.
func fxAbortUploads(t *testing.T, bucket string) int {
	t.Helper()
	out, err := s3c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	must(t, err)
	for _, u := range out.Uploads {
		_, err := s3c.AbortMultipartUpload(context.Background(), &s3.AbortMultipartUploadInput{Bucket: aws.String(bucket), Key: u.Key, UploadId: u.UploadId})
		must(t, err)
	}
	return len(out.Uploads)
}

// TestFaultManagerKillNine injects `kill -9` of the manager at N random
// points of one dump's upload (N = 10 of a 1 GiB dump in the full matrix;
// 2 of a 256 MiB dump in the short form; one 4 KiB page of random data in
// eight, so 128 or 32 MiB to compress and store), each point a random
// share (5–90 %) of the compressed stream, restarting the manager each
// time. It checks: the dump ends Uploaded, with exactly one CoreDump and
// one object (and its .json) in the bucket, equal to the file; the node's
// file is deleted. Multipart uploads the killed managers left open and
// that are still listed at the end are counted (each new attempt at a key
// aborts those at that key; see docs/storage.md).
func TestFaultManagerKillNine(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "fm-kill9", nodeOpts{})
	fxRestoreManager(t)
	size := faultScale[int64](256<<20, 1<<30)
	kills := faultScale(2, 10)
	const every = 8
	compressed := float64(size / every)
	seed := uint64(time.Now().UnixNano())
	rng := mrand.New(mrand.NewPCG(seed, 1))
	t.Logf("kill points drawn with seed %d", seed)

	f := fxDropSparse(t, n, coreName("big-0", "big", 11001), size, every, 11)
	var points []string
	var last time.Time
	for i := range kills {
		base := fxServed(t, n)
		at := compressed * (0.05 + 0.85*rng.Float64())
		n.waitServing(base + at)
		manager.Kill()
		phase := fxPhase(g, n, f.name)
		points = append(points, fmt.Sprintf("%.0f%%", 100*at/compressed))
		t.Logf("kill %d: manager killed (SIGKILL) %.1f MiB into the stream; the dump is %s", i+1, at/(1<<20), phase)
		g.Expect(phase).To(Equal(coredogv1.PhaseUploading), "the upload finished before kill %d", i+1)
		must(t, startManager())
		last = time.Now()
	}
	out := fxConverge(t, n, []fxFile{f}, last, 3*uploadTimeout)
	cd := out.dumps[f.name]
	t.Logf("Uploaded %s after the last restart, %d attempts recorded; killed at %v of the stream", out.converged.Round(time.Millisecond), cd.Status.Attempts, points)
	left := fxAbortUploads(t, n.bucket)
	t.Logf("multipart uploads the killed managers left open, still listed: %d", left)
	recordFault(t, faultRow{
		Group:    "manager",
		Injected: fmt.Sprintf("kill -9 of the manager at %d random points (%s of the stream) of a %s upload, restarted each time", kills, strings.Join(points, ", "), coredogv1.DisplaySize(size)),
		Checked:  fmt.Sprintf("Uploaded once, object equals the file; %d multipart uploads of the kills still listed", left),
		Dumps:    1, Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// TestFaultManagerSIGTERM injects a SIGTERM to the manager while it
// uploads a 256 MiB dump (1 GiB in the full matrix; one page of data in
// eight), once the agent has sent a quarter of it, and starts it again.
// It checks: the manager exits within its grace period (it is not
// killed); after the restart the dump ends Uploaded, with one CoreDump and
// one object equal to the file; the node's file is deleted. Multipart
// uploads still listed afterwards are counted.
func TestFaultManagerSIGTERM(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "fm-sigterm", nodeOpts{})
	fxRestoreManager(t)
	size := faultScale[int64](256<<20, 1<<30)
	const every = 8
	f := fxDropSparse(t, n, coreName("big-1", "big", 11101), size, every, 12)
	n.waitServing(float64(size/every) / 4)
	g.Expect(fxPhase(g, n, f.name)).To(Equal(coredogv1.PhaseUploading))
	stopping := time.Now()
	must(t, manager.Stop(stopGrace))
	exited := time.Since(stopping)
	t.Logf("the manager exited %s after SIGTERM", exited.Round(time.Millisecond))
	phase := fxPhase(g, n, f.name)
	must(t, startManager())
	back := time.Now()
	out := fxConverge(t, n, []fxFile{f}, back, 2*uploadTimeout)
	cd := out.dumps[f.name]
	t.Logf("the dump was %s when the manager had stopped; Uploaded %s after the restart (attempts %d)", phase, out.converged.Round(time.Millisecond), cd.Status.Attempts)
	// The stopping manager aborts its multipart upload, but S3 may still
	// complete a part that was in flight after the abort (AWS documents
	// this; versitygw does it too), which lists the upload again until the
	// next attempt at the key aborts it.
	left := fxAbortUploads(t, n.bucket)
	t.Logf("multipart uploads left after the stop: %d", left)
	recordFault(t, faultRow{
		Group:    "manager",
		Injected: fmt.Sprintf("SIGTERM of the manager a quarter into a %s upload; restarted", coredogv1.DisplaySize(size)),
		Checked:  fmt.Sprintf("exits in %s without being killed, aborting its multipart upload (%d still listed after the retry); after the restart Uploaded once, object equals the file", exited.Round(100*time.Millisecond), left),
		Dumps:    1, Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// TestFaultAgentKillNine injects `kill -9` of the agent while it serves a
// large dump (256 MiB, one page of data in eight; 1 GiB in the full
// matrix), with 5 small files on the node (20 in the full matrix): some
// captured and waiting, the rest dropped while the agent is dead. The
// agent is killed once in the short form, at 3 random points of the
// stream in the full matrix, and restarted each time. It checks: every
// file ends with exactly one CoreDump, Uploaded, its object equal to the
// file; the bucket holds nothing else; the multipart uploads the broken
// streams left were aborted by the manager; the node's files are deleted.
func TestFaultAgentKillNine(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "fa-kill9", nodeOpts{})
	size := faultScale[int64](256<<20, 1<<30)
	const every = 8
	kills := faultScale(1, 3)
	small := faultScale(5, 20)
	compressed := float64(size / every)
	rng := mrand.New(mrand.NewPCG(uint64(time.Now().UnixNano()), 2))

	files := []fxFile{fxDropSparse(t, n, coreName("big-2", "big", 11201), size, every, 13)}
	for i := range small / 2 {
		files = append(files, fxDropSmall(t, n, coreName("small-2", "small", int64(11210+i)), 500+i, 96<<10))
	}
	var last time.Time
	for k := range kills {
		base := fxServed(t, n)
		at := compressed * (0.05 + 0.85*rng.Float64())
		n.waitServing(base + at)
		n.agent.Kill()
		t.Logf("kill %d: agent killed (SIGKILL) %.1f MiB into the stream", k+1, at/(1<<20))
		g.Expect(fxPhase(g, n, files[0].name)).To(Equal(coredogv1.PhaseUploading))
		if k == 0 {
			for i := small / 2; i < small; i++ {
				files = append(files, fxDropSmall(t, n, coreName("small-2", "small", int64(11210+i)), 500+i, 96<<10))
			}
		}
		n.startAgent()
		last = time.Now()
	}
	out := fxConverge(t, n, files, last, 3*uploadTimeout)
	g.Eventually(func() []string { return multipartUploads(t, n.bucket) }).WithTimeout(30*time.Second).WithPolling(200*time.Millisecond).
		Should(BeEmpty(), "the manager should abort the multipart uploads the agent's death broke")
	cd := out.dumps[files[0].name]
	t.Logf("all %d dumps Uploaded %s after the last restart; the large one took %d attempts", len(files), out.converged.Round(time.Millisecond), cd.Status.Attempts)
	recordFault(t, faultRow{
		Group:    "agent",
		Injected: fmt.Sprintf("kill -9 of the agent %d time(s) while it serves a %s dump, %d small files on the node (half dropped while it is dead); restarted", kills, coredogv1.DisplaySize(size), small),
		Checked:  "each file captured once and Uploaded, objects equal the files; the broken multipart uploads aborted",
		Dumps:    len(files), Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// TestFaultAgentSIGTERM injects a SIGTERM to the agent while it serves a
// 256 MiB dump (1 GiB in the full matrix; one page of data in eight), a
// quarter into the stream, with 4 small files captured and waiting; the
// agent is started again 3 s after it exited, with 2 more files dropped
// meanwhile. It checks: the agent exits within its grace period (it is not
// killed); the stream in flight either finishes (its dump Uploaded) or
// breaks and is retried after the restart; every file ends with exactly
// one CoreDump, Uploaded, its object equal to the file; nothing else in
// the bucket and no multipart upload left; the node's files are deleted.
func TestFaultAgentSIGTERM(t *testing.T) {
	g := NewWithT(t)
	n := newNode(t, "fa-sigterm", nodeOpts{})
	size := faultScale[int64](256<<20, 1<<30)
	const every = 8
	files := []fxFile{fxDropSparse(t, n, coreName("big-3", "big", 11301), size, every, 14)}
	for i := range 4 {
		files = append(files, fxDropSmall(t, n, coreName("small-3", "small", int64(11310+i)), 600+i, 64<<10))
	}
	n.waitServing(float64(size/every) / 4)
	stopping := time.Now()
	must(t, n.agent.Stop(stopGrace))
	exited := time.Since(stopping)
	phase := fxPhase(g, n, files[0].name)
	t.Logf("the agent exited %s after SIGTERM; the large dump is %s", exited.Round(time.Millisecond), phase)
	for i := range 2 {
		files = append(files, fxDropSmall(t, n, coreName("small-3", "small", int64(11320+i)), 620+i, 64<<10))
	}
	time.Sleep(3 * time.Second)
	n.startAgent()
	back := time.Now()
	out := fxConverge(t, n, files, back, 2*uploadTimeout)
	g.Eventually(func() []string { return multipartUploads(t, n.bucket) }).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(BeEmpty())
	cd := out.dumps[files[0].name]
	how := "finished during the agent's shutdown grace"
	if cd.Status.Attempts > 1 {
		how = "broken at shutdown and retried after the restart"
	}
	t.Logf("all %d dumps Uploaded %s after the restart; the stream in flight was %s (attempts %d)", len(files), out.converged.Round(time.Millisecond), how, cd.Status.Attempts)
	recordFault(t, faultRow{
		Group:    "agent",
		Injected: fmt.Sprintf("SIGTERM of the agent a quarter into serving a %s dump, 4 files waiting, 2 dropped while it is down; restarted 3 s later", coredogv1.DisplaySize(size)),
		Checked:  fmt.Sprintf("exits in %s without being killed; the stream in flight %s; each file captured once and Uploaded, objects equal the files", exited.Round(100*time.Millisecond), how),
		Dumps:    len(files), Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// TestFaultAgentFrozen injects an agent that freezes (SIGSTOP, as a node
// under memory pressure or a hung kernel would leave it) a quarter into
// serving a 256 MiB dump (one page of data in eight), for longer than the
// manager's --upload-stall-timeout: 8 s against a frozen 15 s in the short
// form (the manager restarted with that flag), the shipped 2 minutes
// against 3 minutes in the full matrix. Then SIGCONT. It checks: the
// manager gives the stalled attempt up (its log says it made no progress)
// instead of waiting on the silent connection for ever; after the agent
// thaws, the dump ends Uploaded with exactly one CoreDump and one object
// equal to the file, nothing else in the bucket, no multipart upload left,
// the node's file deleted. Converged is from SIGCONT.
func TestFaultAgentFrozen(t *testing.T) {
	g := NewWithT(t)
	stall := faultScale(8*time.Second, upload.DefaultStallTimeout)
	frozen := faultScale(15*time.Second, 3*time.Minute)
	if !fullFaults() {
		sfRestartManager(t, "--upload-stall-timeout", stall.String())
	}
	n := newNode(t, "fa-frozen", nodeOpts{})
	const size, every = 256 << 20, 8
	f := fxDropSparse(t, n, coreName("big-11", "big", 11401), size, every, 15)
	n.waitServing(float64(size/every) / 4)
	pgid := n.agent.Cmd.Process.Pid
	must(t, syscall.Kill(-pgid, syscall.SIGSTOP))
	thawed := false
	t.Cleanup(func() {
		if !thawed {
			_ = syscall.Kill(-pgid, syscall.SIGCONT)
		}
	})
	stopped := time.Now()
	cds := n.dumpsByFile(g)[f.name]
	g.Expect(cds).To(HaveLen(1))
	g.Expect(cds[0].Status.Phase).To(Equal(coredogv1.PhaseUploading))
	// The manager gives up on its own while the agent is still frozen.
	var gaveUp string
	g.Eventually(func() string {
		for line := range strings.SplitSeq(localcluster.TailFile(manager.LogPath, 100000), "\n") {
			if strings.Contains(line, "Upload failed; retrying") && strings.Contains(line, cds[0].Name) &&
				strings.Contains(line, upload.ErrStalled.Error()) {
				gaveUp = line
			}
		}
		return gaveUp
	}).WithTimeout(frozen).WithPolling(200*time.Millisecond).ShouldNot(BeEmpty(), "the manager should give up the stalled attempt")
	gaveUpAfter := time.Since(stopped)
	time.Sleep(time.Until(stopped.Add(frozen)))
	must(t, syscall.Kill(-pgid, syscall.SIGCONT))
	thawed = true
	back := time.Now()
	out := fxConverge(t, n, []fxFile{f}, back, 2*uploadTimeout+fxBackoffAfter(frozen))
	g.Eventually(func() []string { return multipartUploads(t, n.bucket) }).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(BeEmpty())
	cd := out.dumps[f.name]
	t.Logf("agent frozen for %s; the manager gave the attempt up %s in; Uploaded %s after SIGCONT (attempts %d)",
		frozen, gaveUpAfter.Round(time.Millisecond), out.converged.Round(time.Millisecond), cd.Status.Attempts)
	recordFault(t, faultRow{
		Group:    "agent",
		Injected: fmt.Sprintf("the agent frozen (SIGSTOP) for %s a quarter into serving a %s dump; then SIGCONT", frozen, coredogv1.DisplaySize(size)),
		Checked:  fmt.Sprintf("the manager gives the silent stream up after --upload-stall-timeout (%s; here %s) and retries; Uploaded once, object equals the file", stall, gaveUpAfter.Round(100*time.Millisecond)),
		Dumps:    1, Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// fxBackoffAfter bounds the wait of the next upload attempt after failures
// spanning d: the manager's backoff doubles from 1 s, capped at 5 minutes.
func fxBackoffAfter(d time.Duration) time.Duration { return min(d+time.Second, 5*time.Minute) }
