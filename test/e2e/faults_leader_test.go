package e2e

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers"
	"github.com/coredog/coredog/test/localcluster"
)

// Leader election: two managers started with --leader-elect, as the
// Deployment runs them with two replicas. cmd/manager has no flags for the
// lease timings, so these tests run with controller-runtime's defaults:
// lease 15 s, renew deadline 10 s, retry period 2 s; a leader that stops
// cleanly releases the lease (LeaderElectionReleaseOnCancel).

// lfManager is one of the leader-elected managers of a test.
type lfManager struct {
	name    string
	proc    *localcluster.Process
	metrics int
}

// lfStartManagers stops the suite's manager (which runs without leader
// election; it is started again when the test ends) and starts two
// managers with leader election, each ready; it returns them once one of
// them leads.
func lfStartManagers(t *testing.T) (a, b *lfManager) {
	t.Helper()
	fxRestoreManager(t)
	must(t, manager.Stop(stopGrace))
	start := func(name string) *lfManager {
		health, err := localcluster.FreePort()
		must(t, err)
		metrics, err := localcluster.FreePort()
		must(t, err)
		args := []string{
			"--kubeconfig", cp.Kubeconfig,
			"--namespace", ns,
			"--agent-image", agentImage,
			"--leader-elect",
			"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(metrics), "--metrics-secure=false",
			"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(health),
		}
		p, err := localcluster.StartProcess(name, logDir, managerBin, args, nil)
		must(t, err)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- last 40 lines of %s (%s) ---\n%s", p.Name, p.LogPath, p.Tail(40))
			}
			_ = p.Stop(stopGrace)
		})
		if err := localcluster.WaitReady(p, fmt.Sprintf("http://127.0.0.1:%d/readyz", health), readyTimeout); err != nil {
			t.Fatalf("%v\n%s", err, p.Tail(40))
		}
		return &lfManager{name: name, proc: p, metrics: metrics}
	}
	a, b = start("manager-le-a"), start("manager-le-b")
	lfLeader(t, a, b)
	return a, b
}

// scrape reads the manager's metrics (the node type's scraper, on this
// manager's port).
func (m *lfManager) scrape() map[string]float64 {
	if m.proc.Exited() {
		return nil
	}
	out, err := (&node{metrics: m.metrics}).metricsOf()
	if err != nil {
		return nil
	}
	return out
}

var lfLeaderMetric = fmt.Sprintf("leader_election_master_status{name=%q}", controllers.LeaderElectionID)

func (m *lfManager) leads() bool { return m.scrape()[lfLeaderMetric] == 1 }

// lfLeader waits until exactly one of the running managers leads and
// returns it.
func lfLeader(t *testing.T, ms ...*lfManager) *lfManager {
	t.Helper()
	var leader *lfManager
	NewWithT(t).Eventually(func(g Gomega) {
		var leading []*lfManager
		for _, m := range ms {
			if m.leads() {
				leading = append(leading, m)
			}
		}
		g.Expect(leading).To(HaveLen(1), "managers leading")
		leader = leading[0]
	}).WithTimeout(60 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	return leader
}

func lfOther(m, a, b *lfManager) *lfManager {
	if m == a {
		return b
	}
	return a
}

// lfUploadBytes is what a manager has stored, by its metrics.
func lfUploadBytes(m *lfManager) float64 { return m.scrape()["coredog_upload_bytes_total"] }

// lfReconciles counts a manager's CoreDump reconciles, whatever their result.
func lfReconciles(m *lfManager) float64 {
	var n float64
	for _, r := range []string{"success", "error", "requeue", "requeue_after"} {
		n += m.scrape()[fmt.Sprintf(`controller_runtime_reconcile_total{controller="coredump",result=%q}`, r)]
	}
	return n
}

// TestFaultLeaderOnlyOneUploads injects a second manager: two managers with
// leader election on, 6 files dropped (30 in the full matrix); then the
// leader gets SIGTERM and 3 more files (10) are dropped. It checks: exactly
// one manager leads; the other reconciles no CoreDump and stores nothing
// (its metrics); every file ends with exactly one CoreDump, Uploaded, its
// object equal to the file, nothing else in the bucket, the node's files
// deleted; after SIGTERM the leader hands over at once (it releases the
// lease rather than let it expire) and the new leader stores the later
// files. The handover time is logged; converged is from the handover's
// start until the later files are stored.
func TestFaultLeaderOnlyOneUploads(t *testing.T) {
	g := NewWithT(t)
	a, b := lfStartManagers(t)
	leader := lfLeader(t, a, b)
	other := lfOther(leader, a, b)
	t.Logf("%s leads", leader.name)
	n := newNode(t, "fl-single", nodeOpts{})
	first, later := faultScale(6, 30), faultScale(3, 10)
	var files []fxFile
	for i := range first {
		files = append(files, fxDropSmall(t, n, coreName("small-8", "small", int64(13000+i)), 1000+i, (64+i)<<10))
	}
	out := fxConverge(t, n, files, time.Now(), 2*uploadTimeout)
	t.Logf("%d files stored %s after the last drop", first, out.converged.Round(time.Millisecond))
	g.Expect(lfReconciles(other)).To(BeZero(), "the manager that does not lead reconciled CoreDumps")
	g.Expect(lfUploadBytes(other)).To(BeZero(), "the manager that does not lead stored dumps")
	g.Expect(lfUploadBytes(leader)).To(BeNumerically(">", 0))
	g.Expect(other.leads()).To(BeFalse())

	stopping := time.Now()
	must(t, leader.proc.Stop(stopGrace))
	lfLeader(t, other)
	handover := time.Since(stopping)
	t.Logf("SIGTERM to the leader: %s leads %s later", other.name, handover.Round(time.Millisecond))
	g.Expect(handover).To(BeNumerically("<", 10*time.Second), "a leader that stops should release the lease, not let it expire (15 s)")
	for i := range later {
		files = append(files, fxDropSmall(t, n, coreName("small-8", "small", int64(13100+i)), 1100+i, (64+i)<<10))
	}
	out2 := fxConverge(t, n, files, stopping, 2*uploadTimeout)
	g.Expect(lfUploadBytes(other)).To(BeNumerically(">", 0))
	recordFault(t, faultRow{
		Group:    "leader election",
		Injected: fmt.Sprintf("two managers with --leader-elect; %d files, then SIGTERM of the leader and %d more files", first, later),
		Checked:  fmt.Sprintf("one leads, the other reconciles and stores nothing; each file Uploaded once; on SIGTERM the lease is released and the other leads in %s", handover.Round(100*time.Millisecond)),
		Dumps:    len(files), Lost: out2.lost, Duplicated: out2.duplicated, LeftOnNode: out2.left, Converged: out2.converged,
	})
}

// TestFaultLeaderFailoverMidUpload injects `kill -9` of the leading
// manager (two run with leader election) a quarter into the upload of a
// 256 MiB dump (1 GiB in the full matrix; one page of data in eight). It
// checks: the dump is still Uploading when the leader dies; the other
// manager takes the lease once it expires (controller-runtime's 15 s) and
// resumes; the dump ends Uploaded with exactly one CoreDump and one object
// equal to the file; nothing else in the bucket; the node's file deleted.
// Multipart uploads the dead leader left open are counted.
func TestFaultLeaderFailoverMidUpload(t *testing.T) {
	g := NewWithT(t)
	a, b := lfStartManagers(t)
	leader := lfLeader(t, a, b)
	other := lfOther(leader, a, b)
	n := newNode(t, "fl-failover", nodeOpts{})
	size := faultScale[int64](256<<20, 1<<30)
	const every = 8
	f := fxDropSparse(t, n, coreName("big-9", "big", 13201), size, every, 31)
	n.waitServing(float64(size/every) / 4)
	leader.proc.Kill()
	killed := time.Now()
	g.Expect(fxPhase(g, n, f.name)).To(Equal(coredogv1.PhaseUploading), "the upload finished before the kill")
	lfLeader(t, other)
	takeover := time.Since(killed)
	t.Logf("killed %s (SIGKILL) a quarter into the upload; %s leads %s later", leader.name, other.name, takeover.Round(time.Millisecond))
	out := fxConverge(t, n, []fxFile{f}, killed, 2*uploadTimeout)
	cd := out.dumps[f.name]
	g.Expect(lfUploadBytes(other)).To(BeNumerically(">", 0), "the new leader should have stored the dump")
	left := fxAbortUploads(t, n.bucket)
	t.Logf("Uploaded %s after the kill (attempts %d); multipart uploads the dead leader left open: %d", out.converged.Round(time.Millisecond), cd.Status.Attempts, left)
	recordFault(t, faultRow{
		Group:    "leader election",
		Injected: fmt.Sprintf("kill -9 of the leading manager (of two) a quarter into a %s upload", coredogv1.DisplaySize(size)),
		Checked:  fmt.Sprintf("the other leads %s later (lease expiry) and stores the dump once, object equals the file; %d multipart upload left open by the dead leader", takeover.Round(100*time.Millisecond), left),
		Dumps:    1, Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}
