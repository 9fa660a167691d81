package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/klauspost/compress/zstd"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/localcluster"
	"github.com/coredog/coredog/test/testcrash"
)

// nodeOpts shape one test's agent.
type nodeOpts struct {
	// settle and poll are the agent's --settle-time and --poll-interval
	// (defaults 500ms and 2s).
	settle, poll time.Duration
	// noProcRoot runs the agent with --proc-root= (no PID or cgroup checks:
	// completeness rests on the settle time alone). Otherwise --proc-root
	// is an empty directory of the test's, where no PID exists unless the
	// test makes one.
	noProcRoot bool
	// disableWatch runs the agent with --disable-watch.
	disableWatch bool
	// agentArgs are more agent flags, as the DaemonSet would render them
	// from the policy (--max-node-usage=...).
	agentArgs []string
	// noPolicy leaves creating the policy to the test (kubectl apply) and
	// does not start the agent.
	noPolicy bool
}

// node is one simulated node: a policy that selects it, the directory its
// agent watches, a proc root, a bucket, and the agent process.
type node struct {
	t        *testing.T
	policy   string
	name     string
	dir      string
	procRoot string
	tlsDir   string
	logDir   string
	bucket   string
	opts     nodeOpts
	health   int
	metrics  int
	agent    *localcluster.Process
}

// newNode sets up a node for the test: a bucket, a policy that selects only
// this node and directory, and (unless opts.noPolicy) the agent, started and
// ready. policy must be short and DNS-friendly.
func newNode(t *testing.T, policy string, opts nodeOpts) *node {
	t.Helper()
	if opts.settle == 0 {
		opts.settle = 500 * time.Millisecond
	}
	if opts.poll == 0 {
		opts.poll = 2 * time.Second
	}
	n := &node{
		t: t, policy: policy, name: "node-" + policy, opts: opts,
		dir: filepath.Join(t.TempDir(), "cores"), tlsDir: t.TempDir(), logDir: t.TempDir(),
		bucket: "e2e-" + policy,
	}
	if !opts.noProcRoot {
		n.procRoot = t.TempDir()
	}
	must(t, os.MkdirAll(n.dir, 0o755))
	var err error
	n.health, err = localcluster.FreePort()
	must(t, err)
	n.metrics, err = localcluster.FreePort()
	must(t, err)
	_, err = s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(n.bucket)})
	must(t, err)
	t.Cleanup(n.printLogsOnFailure)
	t.Cleanup(func() {
		if n.agent != nil {
			_ = n.agent.Stop(stopGrace)
		}
	})
	if !opts.noPolicy {
		must(t, k8s.Create(context.Background(), n.policyObject()))
		n.startAgent()
	}
	return n
}

// storageURL is the policy's storage URL: the node's bucket on the suite's S3 server.
func (n *node) storageURL() string {
	return fmt.Sprintf("s3://%s?region=%s&endpoint=%s&use_path_style=true", n.bucket, s3Region, s3srv.endpoint())
}

// nodeLabel is the label the policy's nodeSelector requires; each node has its own value.
const nodeLabel = "e2e.coredog.io/node"

func (n *node) policyObject() *coredogv1.CoreDumpPolicy {
	return &coredogv1.CoreDumpPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: n.policy},
		Spec: coredogv1.CoreDumpPolicySpec{
			NodeSelector: map[string]string{nodeLabel: n.name},
			HostPath:     n.dir,
			Detection: coredogv1.DetectionSpec{
				PollInterval: &metav1.Duration{Duration: n.opts.poll},
				SettleTime:   &metav1.Duration{Duration: n.opts.settle},
			},
			Storage: coredogv1.StorageSpec{URL: n.storageURL(), SecretRef: &coredogv1.SecretReference{Name: s3SecretName}},
			// The suite makes many dumps of one program; the default of 5
			// per hour would throttle them.
			Limits: coredogv1.LimitsSpec{RateLimit: coredogv1.RateLimitSpec{Count: ptr.To[int32](100000)}},
		},
	}
}

// startAgent starts the agent binary for this node, as the DaemonSet would
// run it (the TLS Secret written where the kubelet would mount it), and
// waits until it is ready.
func (n *node) startAgent() {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	must(n.t, cp.WriteAgentTLS(ctx, ns, n.policy, n.tlsDir))
	args := []string{
		"--kubeconfig", cp.Kubeconfig,
		"--node-name", n.name,
		"--policy", n.policy,
		"--namespace", ns,
		"--dir", n.dir,
		"--proc-root=" + n.procRoot,
		"--listen", "127.0.0.1:0",
		"--tls-dir", n.tlsDir,
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(n.health),
		"--metrics-bind-address", "127.0.0.1:" + strconv.Itoa(n.metrics),
		// The suite scrapes over plain HTTP on loopback;
		// TestMetricsExported checks the secure default.
		"--metrics-secure=false",
		"--poll-interval", n.opts.poll.String(),
		"--settle-time", n.opts.settle.String(),
		"--min-node-free", "0%",
		"--lease-renew-interval", "1s",
		// Every file these tests write must become a CoreDump: the
		// creation budget has its own test (agent/app TestCrashLoopIsCounted).
		"--node-burst=100000", "--signature-burst=100000",
	}
	if n.opts.disableWatch {
		args = append(args, "--disable-watch")
	}
	args = append(args, n.opts.agentArgs...)
	p, err := localcluster.StartProcess("agent-"+n.policy, n.logDir, agentBin, args, nil)
	must(n.t, err)
	n.agent = p
	if err := localcluster.WaitReady(p, fmt.Sprintf("http://127.0.0.1:%d/readyz", n.health), readyTimeout); err != nil {
		n.t.Fatal(err)
	}
}

// printLogsOnFailure prints the tail of every process's log when the test failed.
func (n *node) printLogsOnFailure() {
	if !n.t.Failed() {
		return
	}
	var procs []*localcluster.Process
	if n.agent != nil {
		procs = append(procs, n.agent)
	}
	procs = append(procs, manager, s3srv.proc)
	for _, p := range procs {
		n.t.Logf("--- last 60 lines of %s (%s) ---\n%s", p.Name, p.LogPath, p.Tail(60))
	}
	api := filepath.Join(logDir, "kube-apiserver.log")
	n.t.Logf("--- last 20 lines of kube-apiserver (%s) ---\n%s", api, localcluster.TailFile(api, 20))
}

// pattern is the default fileNamePattern, core.%h.%e.%P.%s.%t.
var pattern = func() *corefile.Pattern {
	p, err := corefile.ParsePattern(coredogv1.DefaultFileNamePattern)
	if err != nil {
		panic(err)
	}
	return p
}()

// coreName is the file name the kernel would give a SIGSEGV core under the default pattern.
func coreName(hostname, exe string, pid int64) string {
	return pattern.Render(corefile.NameFields{Hostname: hostname, Executable: exe, HostPID: pid, Signal: 11, Time: time.Now().UTC().Truncate(time.Second)})
}

// drop puts a complete file into the watched directory at once: written
// under a hidden name (which the agent ignores), then renamed.
func (n *node) drop(name string, data []byte) {
	n.t.Helper()
	tmp := filepath.Join(n.dir, ".tmp-"+name)
	must(n.t, os.WriteFile(tmp, data, 0o600))
	must(n.t, os.Rename(tmp, filepath.Join(n.dir, name)))
}

// crash crashes the test program (a real kernel core, RLIMIT_CORE raised,
// in a staging directory) and returns the core's bytes and the crash.
func crash(t *testing.T) ([]byte, testcrash.Crash) {
	t.Helper()
	c, err := testcrash.Run(crasherBin, t.TempDir(), t.Logf)
	must(t, err)
	if c.ViaGDB {
		t.Logf("the kernel wrote no core into the working directory; gdb's gcore made %s", c.Core)
	}
	data, err := os.ReadFile(c.Core)
	must(t, err)
	return data, c
}

// coreLike is a file that looks like the start of a core (not a parsable
// one) with content that depends on seed.
func coreLike(seed, size int) []byte {
	b := make([]byte, size)
	copy(b, "\x7fELF-but-not-really ")
	binary := []byte(fmt.Sprintf("seed=%d ", seed))
	copy(b[24:], binary)
	for i := 4096; i < size; i += 512 {
		b[i] = byte(seed + i/512)
	}
	return b
}

// makeSparseCore writes a core-like file of size bytes (logical), mostly
// holes, with one page of random data every `every` pages, and returns the
// SHA-256 of its full contents. It writes under a hidden name; rename it
// into place.
func makeSparseCore(t *testing.T, path string, size int64, every int64, seed uint64) string {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	defer f.Close()
	must(t, f.Truncate(size))
	const page = 4096
	rng := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	zero := make([]byte, page)
	data := make([]byte, page)
	h := sha256.New()
	for off := int64(0); off < size; off += page {
		if (off/page)%every != 0 {
			h.Write(zero)
			continue
		}
		_, _ = rng.Read(data)
		if off == 0 {
			copy(data, "\x7fELF-but-not-really ")
		}
		_, err := f.WriteAt(data, off)
		must(t, err)
		h.Write(data)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// dumps returns the node's CoreDumps, as the API server has them.
func (n *node) dumps(g Gomega) []coredogv1.CoreDump {
	var list coredogv1.CoreDumpList
	g.Expect(k8s.List(context.Background(), &list, client.InNamespace(ns))).To(Succeed())
	var out []coredogv1.CoreDump
	for _, cd := range list.Items {
		if cd.Spec.PolicyName == n.policy {
			out = append(out, cd)
		}
	}
	return out
}

// dumpsByFile groups the node's CoreDumps by file name.
func (n *node) dumpsByFile(g Gomega) map[string][]coredogv1.CoreDump {
	out := map[string][]coredogv1.CoreDump{}
	for _, cd := range n.dumps(g) {
		out[cd.Spec.FileName] = append(out[cd.Spec.FileName], cd)
	}
	return out
}

// waitPhase waits until the CoreDump of fileName is in phase, failing at
// once if it ends in another terminal phase.
func (n *node) waitPhase(fileName string, phase coredogv1.Phase, timeout time.Duration) *coredogv1.CoreDump {
	n.t.Helper()
	var cd coredogv1.CoreDump
	NewWithT(n.t).Eventually(func(g Gomega) {
		byFile := n.dumpsByFile(g)
		g.Expect(byFile[fileName]).To(HaveLen(1), "CoreDumps of %s", fileName)
		cd = byFile[fileName][0]
		if p := cd.Status.Phase; p != phase && p.IsFinal() {
			StopTrying(fmt.Sprintf("%s ended %s (%s: %s), not %s", fileName, p, cd.Status.Reason, cd.Status.Message, phase)).Now()
		}
		g.Expect(cd.Status.Phase).To(Equal(phase), "status of %s: %s %s", fileName, cd.Status.Reason, cd.Status.Message)
	}).WithTimeout(timeout).WithPolling(100 * time.Millisecond).Should(Succeed())
	return &cd
}

// waitAllUploaded waits until every file has exactly one CoreDump and all
// are Uploaded, and returns them by file name.
func (n *node) waitAllUploaded(files []string, timeout time.Duration) map[string]coredogv1.CoreDump {
	n.t.Helper()
	out := map[string]coredogv1.CoreDump{}
	NewWithT(n.t).Eventually(func(g Gomega) {
		byFile := n.dumpsByFile(g)
		done := 0
		for _, f := range files {
			cds := byFile[f]
			g.Expect(len(cds)).To(BeNumerically("<=", 1), "CoreDumps of %s", f)
			if len(cds) == 1 {
				switch p := cds[0].Status.Phase; p {
				case coredogv1.PhaseUploaded:
					out[f] = cds[0]
					done++
				case coredogv1.PhaseFailed, coredogv1.PhaseSkipped:
					StopTrying(fmt.Sprintf("%s ended %s: %s", f, p, cds[0].Status.Message)).Now()
				}
			}
		}
		g.Expect(done).To(Equal(len(files)), "Uploaded so far")
	}).WithTimeout(timeout).WithPolling(200 * time.Millisecond).Should(Succeed())
	return out
}

// waitGone waits until the agent has deleted a file from the node.
func (n *node) waitGone(name string) {
	n.t.Helper()
	NewWithT(n.t).Eventually(func() bool {
		_, err := os.Stat(filepath.Join(n.dir, name))
		return os.IsNotExist(err)
	}).WithTimeout(30*time.Second).WithPolling(100*time.Millisecond).Should(BeTrue(), "the agent should delete %s from the node", name)
}

// metricsOf scrapes the agent's metrics: sample (name with labels) → value.
func (n *node) metricsOf() (map[string]float64, error) {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", n.metrics))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

const (
	servedBytesMetric = "coredog_agent_served_bytes_total"
	abortedMetric     = `coredog_agent_serve_requests_total{code="aborted"}`
)

// waitServing waits until the agent has sent at least min compressed bytes
// (counted from its start) and returns the count it saw.
func (n *node) waitServing(min float64) float64 {
	n.t.Helper()
	var served float64
	NewWithT(n.t).Eventually(func(g Gomega) {
		m, err := n.metricsOf()
		g.Expect(err).NotTo(HaveOccurred())
		served = m[servedBytesMetric]
		g.Expect(served).To(BeNumerically(">=", min))
	}).WithTimeout(uploadTimeout).WithPolling(5 * time.Millisecond).Should(Succeed())
	return served
}

// createPod makes a running pod on node with one container "app", its
// status written through the status subresource as a kubelet would.
func createPod(t *testing.T, namespace, name, nodeName, containerID string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	must(t, cp.EnsureNamespace(ctx, namespace, nil))
	started := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "app", Image: "registry.example/crashy:1"}}},
	}
	must(t, k8s.Create(ctx, pod))
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &started,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "app", Image: "registry.example/crashy:1", ImageID: "registry.example/crashy@sha256:" + strings.Repeat("0", 64),
			ContainerID: containerID, Ready: true, Started: new(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		}},
	}
	must(t, k8s.Status().Update(ctx, pod))
	return pod
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// listKeys lists every object in a bucket.
func listKeys(t *testing.T, bucket string) []string {
	t.Helper()
	var keys []string
	p := s3.NewListObjectsV2Paginator(s3c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(context.Background())
		must(t, err)
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	sort.Strings(keys)
	return keys
}

// multipartUploads lists the multipart uploads in progress in a bucket.
func multipartUploads(t *testing.T, bucket string) []string {
	t.Helper()
	out, err := s3c.ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	must(t, err)
	var ups []string
	for _, u := range out.Uploads {
		ups = append(ups, aws.ToString(u.Key)+" (upload "+aws.ToString(u.UploadId)+")")
	}
	return ups
}

// metadataKey is the key of the .json next to a dump.
func metadataKey(key string) string { return strings.TrimSuffix(key, ".zst") + ".json" }

// expectBucket checks that the bucket holds exactly each dump and its
// metadata, nothing else and nothing twice.
func expectBucket(t *testing.T, bucket string, cds []coredogv1.CoreDump) {
	t.Helper()
	var want []string
	for _, cd := range cds {
		if cd.Status.Storage == nil {
			t.Fatalf("CoreDump %s has no storage status", cd.Name)
		}
		want = append(want, cd.Status.Storage.Key, metadataKey(cd.Status.Storage.Key))
	}
	sort.Strings(want)
	got := listKeys(t, bucket)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("bucket %s holds\n  %s\nwant exactly\n  %s", bucket, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

// readObject reads a whole object.
func readObject(t *testing.T, bucket, key string) []byte {
	t.Helper()
	out, err := s3c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	must(t, err)
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	must(t, err)
	return b
}

// storedDigest streams a stored .zst object through zstd and returns the
// size and SHA-256 of what comes out, and the stored (compressed) size.
func storedDigest(t *testing.T, bucket, key string) (rawSize int64, rawSHA string, storedSize int64) {
	t.Helper()
	out, err := s3c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	must(t, err)
	defer out.Body.Close()
	counted := &countingReader{r: out.Body}
	dec, err := zstd.NewReader(counted)
	must(t, err)
	defer dec.Close()
	h := sha256.New()
	rawSize, err = io.Copy(h, dec)
	must(t, err)
	return rawSize, hex.EncodeToString(h.Sum(nil)), counted.n
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// storedMeta is what the suite reads back from a dump's .json.
type storedMeta struct {
	Kind     string `json:"kind"`
	Metadata struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec   coredogv1.CoreDumpSpec   `json:"spec"`
	Status coredogv1.CoreDumpStatus `json:"status"`
}

// expectStored checks that an Uploaded dump is in its bucket as the
// CoreDump says: decompressed, the stored object is the node's file
// (rawSize bytes with SHA-256 rawSHA); its .json sits next to it.
func expectStored(t *testing.T, bucket string, cd *coredogv1.CoreDump, rawSize int64, rawSHA string) {
	t.Helper()
	st := cd.Status.Storage
	if st == nil {
		t.Fatalf("CoreDump %s has no storage status", cd.Name)
	}
	if want := "s3://" + bucket + "/" + st.Key; st.URL != want {
		t.Errorf("storage URL %s, want %s", st.URL, want)
	}
	if !strings.HasSuffix(st.Key, ".zst") || st.Compression != coredogv1.CompressionZstd {
		t.Errorf("storage key %s, compression %s: want a .zst", st.Key, st.Compression)
	}
	size, sum, stored := storedDigest(t, bucket, st.Key)
	if size != rawSize || sum != rawSHA {
		t.Errorf("stored dump %s decompresses to %d bytes with SHA-256 %s; the node's file was %d bytes with %s", st.Key, size, sum, rawSize, rawSHA)
	}
	if st.SHA256 != rawSHA {
		t.Errorf("status.storage.sha256 %s, want %s", st.SHA256, rawSHA)
	}
	if st.StoredSize != stored {
		t.Errorf("status.storage.storedSize %d, but the object is %d bytes", st.StoredSize, stored)
	}
	var meta storedMeta
	must(t, json.Unmarshal(readObject(t, bucket, metadataKey(st.Key)), &meta))
	if meta.Kind != "CoreDump" || meta.Metadata.Name != cd.Name || meta.Spec.Size != rawSize || meta.Status.Phase != coredogv1.PhaseUploaded ||
		meta.Status.Storage == nil || meta.Status.Storage.Key != st.Key || meta.Spec.NodeName != cd.Spec.NodeName {
		t.Errorf("metadata next to %s does not describe the dump: %+v", st.Key, meta)
	}
}

// expectStoredBytes is expectStored for a dump whose bytes the test holds.
func expectStoredBytes(t *testing.T, bucket string, cd *coredogv1.CoreDump, raw []byte) {
	t.Helper()
	sum := sha256.Sum256(raw)
	expectStored(t, bucket, cd, int64(len(raw)), hex.EncodeToString(sum[:]))
	if t.Failed() {
		return
	}
	// Byte for byte, too, for dumps small enough to hold.
	out := readObject(t, bucket, cd.Status.Storage.Key)
	dec, err := zstd.NewReader(bytes.NewReader(out))
	must(t, err)
	defer dec.Close()
	got, err := io.ReadAll(dec)
	must(t, err)
	if !bytes.Equal(got, raw) {
		t.Errorf("stored dump %s differs from the node's file", cd.Status.Storage.Key)
	}
}

// coreDumpedEvent returns the CoreDumped event regarding a pod, if any.
func coreDumpedEvent(g Gomega, pod *corev1.Pod) *eventsv1.Event {
	var evs eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &evs, client.InNamespace(pod.Namespace))).To(Succeed())
	for i := range evs.Items {
		ev := &evs.Items[i]
		if ev.Reason == "CoreDumped" && ev.Regarding.Kind == "Pod" && ev.Regarding.Name == pod.Name && ev.Regarding.UID == pod.UID {
			return ev
		}
	}
	return nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
