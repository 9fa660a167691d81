package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Control-plane faults: the API server and etcd go away while crashes keep
// coming. The agent keeps the files on the node and retries; the manager's
// informers reconnect; every dump must end Uploaded exactly once.

// cpfCrashes makes the crashes of a control-plane row: core-like files
// dropped and real kernel cores renamed into the node's directory, taking
// turns.
type cpfCrashes struct {
	t     *testing.T
	n     *node
	files map[string]string // file name → SHA-256
	data  map[string][]byte
	names []string // in the order they came
	real  int
	next  int
}

func cpfNewCrashes(t *testing.T, n *node) *cpfCrashes {
	return &cpfCrashes{t: t, n: n, files: map[string]string{}, data: map[string][]byte{}}
}

// cpfStart starts a node for policy and waits until its first crash is
// Uploaded: the system works before the fault.
func cpfStart(t *testing.T, policy string) (*node, *cpfCrashes) {
	n := newNode(t, policy, nodeOpts{})
	crashes := cpfNewCrashes(t, n)
	crashes.one()
	for name := range crashes.files {
		n.waitPhase(name, coredogv1.PhaseUploaded, uploadTimeout)
	}
	return n, crashes
}

// one makes the next crash: a real one on odd turns, a dropped file on even ones.
func (c *cpfCrashes) one() {
	c.t.Helper()
	i := c.next
	c.next++
	var name string
	var b []byte
	if i%2 == 1 {
		data, cr := crash(c.t)
		name = coreName("cp-"+c.n.policy, "crashy", int64(cr.PID))
		must(c.t, os.Rename(cr.Core, filepath.Join(c.n.dir, name)))
		b = data
		c.real++
	} else {
		name = coreName("cp-"+c.n.policy, "dropped", int64(30000+i))
		b = coreLike(3000+i, 40<<10+i<<9)
		c.n.drop(name, b)
	}
	c.files[name], c.data[name] = sha256Hex(b), b
	c.names = append(c.names, name)
}

// during makes a crash every interval until d has passed since start.
func (c *cpfCrashes) during(start time.Time, d, interval time.Duration) {
	c.t.Helper()
	for time.Since(start)+interval <= d {
		c.one()
		time.Sleep(interval)
	}
}

// onNode checks that the files from the from'th on are still on the node.
func (c *cpfCrashes) onNode(from int) {
	c.t.Helper()
	for _, name := range c.names[from:] {
		if _, err := os.Stat(filepath.Join(c.n.dir, name)); err != nil {
			c.t.Fatalf("%s left the node during the outage: %v", name, err)
		}
	}
}

// TestFaultAPIServerOutage injects a kube-apiserver outage of 60 s (10 s in
// the short form; etcd keeps running) while crashes keep coming: a dump is
// Uploaded first, then every 2 s (1 s short) a core-like file is dropped or
// a real crash's core is renamed in, taking turns; the API server comes
// back on the same address with the same certificates, and two more files
// follow at once. It checks: the agent found the outage's files and says it
// is retrying; they all stay on the node meanwhile; afterwards every file,
// before, during and after, has exactly one CoreDump, Uploaded with its
// file's SHA-256 (the real cores byte for byte); the bucket holds exactly
// those dumps; the node's files are deleted.
func TestFaultAPIServerOutage(t *testing.T) {
	g := NewWithT(t)
	outage := faultScale(10*time.Second, 60*time.Second)
	interval := faultScale(time.Second, 2*time.Second)
	n, crashes := cpfStart(t, "fault-api-outage")

	up := false
	t.Cleanup(func() {
		if !up {
			if err := cp.StartAPIServer(); err != nil {
				t.Errorf("starting the API server again: %v", err)
			}
		}
	})
	stopping := time.Now()
	must(t, cp.StopAPIServer())
	stopped := time.Now()
	t.Logf("kube-apiserver stopped in %s", stopped.Sub(stopping).Round(time.Millisecond))
	before := len(crashes.names)
	crashes.during(stopped, outage, interval)
	during := len(crashes.names) - before
	nfWaitLog(t, n.agent.LogPath, "Cannot create the CoreDump yet", 10*time.Second)
	time.Sleep(time.Until(stopped.Add(outage)))
	crashes.onNode(before)

	host := cp.Config.Host
	must(t, cp.StartAPIServer())
	up = true
	back := time.Now()
	downFor := back.Sub(stopping)
	t.Logf("kube-apiserver was away for %s (stopping, stopped, starting); %d dumps came meanwhile (%d real crashes in all)", downFor.Round(time.Millisecond), during, crashes.real)
	g.Expect(cp.Config.Host).To(Equal(host))
	crashes.one()
	crashes.one()

	res := nfSettle(t, n, crashes.files, nil, back, 3*uploadTimeout)
	nfRequireClean(t, res)
	for name, cd := range res.final {
		if cd.Spec.ELF != nil {
			expectStoredBytes(t, n.bucket, &cd, crashes.data[name])
		}
	}
	created, uploaded := cpfLastAfter(res, crashes.names[before:before+during], back)
	t.Logf("after the API server was back: the outage's last CoreDump was created %s later, its last dump Uploaded %s later (one-second timestamps)", created, uploaded)
	recordFault(t, faultRow{
		Group:    "control plane",
		Injected: fmt.Sprintf("kube-apiserver stopped for %s (away %s with stopping and starting; etcd up) while %d dumps came, real crashes and dropped files taking turns", outage, downFor.Round(time.Second), during),
		Checked:  "the agent keeps the files and retries; after the API server is back every dump, before, during and after, is Uploaded once with its file's SHA-256; nothing else in the bucket; files deleted",
		Dumps:    len(crashes.files), Lost: res.lost, Duplicated: res.duplicated, LeftOnNode: res.left,
		Converged: res.converged,
	})
}

// TestFaultEtcdRestart injects an etcd restart under a running
// kube-apiserver: etcd is stopped (SIGTERM) for 30 s (8 s in the short
// form) and started again on the same URL and data. Before it stops, a
// dump is Uploaded and another is dropped; while it is down, a crash every
// 2 s (1 s short), real cores and dropped files taking turns; after it is
// back, two more. It checks: the API server comes back to serving without
// a restart of its own; every file has exactly one CoreDump, Uploaded with
// its file's SHA-256; the bucket holds exactly those dumps; the node's
// files are deleted.
func TestFaultEtcdRestart(t *testing.T) {
	g := NewWithT(t)
	down := faultScale(8*time.Second, 30*time.Second)
	interval := faultScale(time.Second, 2*time.Second)
	n, crashes := cpfStart(t, "fault-etcd-restart")

	up := false
	t.Cleanup(func() {
		if !up {
			if err := cp.StartEtcd(); err != nil {
				t.Errorf("starting etcd again: %v", err)
			}
		}
	})
	crashes.one()
	stopping := time.Now()
	must(t, cp.StopEtcd())
	stopped := time.Now()
	t.Logf("etcd stopped in %s", stopped.Sub(stopping).Round(time.Millisecond))
	before := len(crashes.names)
	crashes.during(stopped, down-2*time.Second, interval)
	during := len(crashes.names) - before
	probe, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := k8s.Create(probe, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "etcd-probe"}})
	cancel()
	g.Expect(err).To(HaveOccurred(), "the API server should fail writes while etcd is away")
	time.Sleep(time.Until(stopped.Add(down)))
	crashes.onNode(before)

	must(t, cp.StartEtcd())
	up = true
	back := time.Now()
	downFor := back.Sub(stopping)
	t.Logf("etcd was away for %s (stopping, stopped, starting); %d dumps came meanwhile", downFor.Round(time.Millisecond), during)
	crashes.one()
	crashes.one()

	res := nfSettle(t, n, crashes.files, nil, back, 3*uploadTimeout)
	nfRequireClean(t, res)
	for name, cd := range res.final {
		if cd.Spec.ELF != nil {
			expectStoredBytes(t, n.bucket, &cd, crashes.data[name])
		}
	}
	g.Expect(res.final).To(HaveLen(len(crashes.files)))
	created, uploaded := cpfLastAfter(res, crashes.names[before:before+during], back)
	t.Logf("after etcd was back: the outage's last CoreDump was created %s later, its last dump Uploaded %s later (one-second timestamps)", created, uploaded)
	recordFault(t, faultRow{
		Group:    "control plane",
		Injected: fmt.Sprintf("etcd stopped (SIGTERM) for %s (away %s with stopping and starting) under a running kube-apiserver, then started on the same data, while %d dumps came", down, downFor.Round(time.Second), during),
		Checked:  "every dump, before, during and after, is Uploaded once with its file's SHA-256; nothing else in the bucket; files deleted",
		Dumps:    len(crashes.files), Lost: res.lost, Duplicated: res.duplicated, LeftOnNode: res.left,
		Converged: res.converged,
	})
}

// cpfLastAfter returns how long after back the last of names got its
// CoreDump and was Uploaded, by the API server's one-second timestamps.
func cpfLastAfter(res *nfResult, names []string, back time.Time) (created, uploaded time.Duration) {
	back = back.Truncate(time.Second)
	for _, name := range names {
		cd := res.final[name]
		created = max(created, cd.CreationTimestamp.Sub(back))
		if st := cd.Status.Storage; st != nil && st.UploadedAt != nil {
			uploaded = max(uploaded, st.UploadedAt.Sub(back))
		}
	}
	return created, uploaded
}
