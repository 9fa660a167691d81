package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	. "github.com/onsi/gomega"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/upload"
	"github.com/coredog/coredog/test/localcluster"
)

// Storage faults: the node's policy stores through a fault proxy in front
// of the suite's S3 server, which refuses connections, fails chosen
// requests or throttles on command.

// sfNode is newNode with the policy's storage endpoint pointed at a fault
// proxy in front of the S3 server.
func sfNode(t *testing.T, policy string) (*node, *localcluster.FaultProxy) {
	t.Helper()
	n := newNode(t, policy, nodeOpts{noPolicy: true})
	proxy, err := localcluster.StartFaultProxy(s3srv.endpoint())
	must(t, err)
	t.Cleanup(func() { _ = proxy.Close() })
	p := n.policyObject()
	p.Spec.Storage.URL = strings.Replace(n.storageURL(), s3srv.endpoint(), proxy.URL(), 1)
	must(t, k8s.Create(context.Background(), p))
	n.startAgent()
	return n, proxy
}

// sfWaitRetrying waits until every file's CoreDump is Uploading with at
// least min failed attempts and returns the last status message of each.
func sfWaitRetrying(t *testing.T, n *node, files []fxFile, min int32, timeout time.Duration) map[string]string {
	t.Helper()
	msgs := map[string]string{}
	NewWithT(t).Eventually(func(g Gomega) {
		byFile := n.dumpsByFile(g)
		for _, f := range files {
			g.Expect(byFile[f.name]).To(HaveLen(1), f.name)
			cd := byFile[f.name][0]
			g.Expect(cd.Status.Phase).To(Equal(coredogv1.PhaseUploading), "%s: %s", f.name, cd.Status.Message)
			g.Expect(cd.Status.Attempts).To(BeNumerically(">=", min), "%s: %s", f.name, cd.Status.Message)
			g.Expect(cd.Status.Reason).To(Equal(coredogv1.ReasonUploadRetrying))
			msgs[f.name] = cd.Status.Message
		}
	}).WithTimeout(timeout).WithPolling(200 * time.Millisecond).Should(Succeed())
	return msgs
}

// sfWarnings returns the notes of the Warning events with reason regarding
// each of the node's CoreDumps, by CoreDump name.
func sfWarnings(g Gomega, reason string) map[string][]string {
	var evs eventsv1.EventList
	g.Expect(k8s.List(context.Background(), &evs, client.InNamespace(ns))).To(Succeed())
	out := map[string][]string{}
	for _, ev := range evs.Items {
		if ev.Reason == reason && ev.Type == "Warning" && ev.Regarding.Kind == "CoreDump" {
			out[ev.Regarding.Name] = append(out[ev.Regarding.Name], ev.Note)
		}
	}
	return out
}

// TestFaultStorageUnreachable injects an S3 server that cannot be reached
// for 2 minutes (10 s in the short form): the fault proxy in front of it
// closes its port (connections refused) and cuts the connections it has,
// while a 128 MiB dump (32 MiB of data) is halfway up; 3 more files (10 in
// the full matrix) are dropped during the outage. It checks: meanwhile
// every dump is Uploading and retrying, with failed attempts counted and
// the files still on the node; after the port opens again, every file has
// exactly one CoreDump, Uploaded, with its object equal to the file,
// nothing else in the bucket, and the node's files are deleted.
func TestFaultStorageUnreachable(t *testing.T) {
	n, proxy := sfNode(t, "fs-unreach")
	outage := faultScale(10*time.Second, 2*time.Minute)
	small := faultScale(3, 10)
	const size, every = 128 << 20, 4

	files := []fxFile{fxDropSparse(t, n, coreName("big-4", "big", 12001), size, every, 21)}
	n.waitServing(float64(size/every) / 2)
	must(t, proxy.Refuse())
	down := time.Now()
	for i := range small {
		files = append(files, fxDropSmall(t, n, coreName("small-4", "small", int64(12010+i)), 700+i, 128<<10))
	}
	// The outage lasts its length, and on a loaded machine longer, until
	// every dump has failed once: the check is about what a failure does.
	msgs := sfWaitRetrying(t, n, files, 1, outage+2*time.Minute)
	for _, f := range files {
		if fxGone(n, f.name) {
			t.Errorf("%s left the node while its dump could not be stored", f.name)
		}
	}
	t.Logf("while S3 was unreachable, e.g.: %s", msgs[files[len(files)-1].name])
	time.Sleep(time.Until(down.Add(outage)))
	must(t, proxy.Accept())
	back := time.Now()
	out := fxConverge(t, n, files, back, outage+2*uploadTimeout)
	var attempts []int32
	for _, f := range files {
		attempts = append(attempts, out.dumps[f.name].Status.Attempts)
	}
	t.Logf("S3 unreachable for %s; all %d dumps Uploaded %s after it was back; attempts per dump %v",
		back.Sub(down).Round(time.Millisecond), len(files), out.converged.Round(time.Millisecond), attempts)
	if left := multipartUploads(t, n.bucket); len(left) > 0 {
		t.Logf("multipart uploads left by the cut upload (the abort could not reach S3): %v", left)
	}
	recordFault(t, faultRow{
		Group:    "storage",
		Injected: fmt.Sprintf("S3 unreachable (connections refused, open ones cut) for %s, halfway through a 128 MiB upload, %d files dropped meanwhile", back.Sub(down).Round(time.Second), small),
		Checked:  "dumps held back Uploading with failed attempts, files kept on the node; then each Uploaded once, objects equal the files",
		Dumps:    len(files), Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// TestFaultStorage500OnPart injects 500 Internal Error answers to one part
// of a multipart upload, in two dumps of 32 MiB of data (256 MiB in the
// full matrix), 5 MiB parts: for dump A the first UploadPart request of
// part 2 fails once (a blip the S3 client retries itself), for dump B it
// fails 4 times in a row (more than the client's 3 attempts, so the whole
// upload fails and the manager must abort it and start again). It checks:
// the proxy failed exactly those requests; each dump ends Uploaded with
// exactly one CoreDump and one object equal to its file; nothing else in
// the bucket, no multipart upload left; the node's files are deleted.
func TestFaultStorage500OnPart(t *testing.T) {
	g := NewWithT(t)
	n, proxy := sfNode(t, "fs-500")
	size := faultScale[int64](64<<20, 512<<20)
	const every = 2

	ruleA := proxy.FailNth(localcluster.MatchS3UploadPart(2), 1, http.StatusInternalServerError)
	start := time.Now()
	a := fxDropSparse(t, n, coreName("big-5", "big", 12101), size, every, 22)
	outA := fxConverge(t, n, []fxFile{a}, start, 2*uploadTimeout)
	g.Expect(ruleA.Fired()).To(Equal(1))
	attemptsA := outA.dumps[a.name].Status.Attempts

	proxy.ClearRules()
	ruleB := proxy.AddRule(&localcluster.FaultRule{Match: localcluster.MatchS3UploadPart(2), Nth: 1, Count: 4, Status: http.StatusInternalServerError})
	start = time.Now()
	b := fxDropSparse(t, n, coreName("big-5", "big", 12102), size, every, 23)
	// A, stored already, is counted again with B: the bucket holds both.
	outB := fxConverge(t, n, []fxFile{a, b}, start, 2*uploadTimeout)
	g.Expect(ruleB.Fired()).To(Equal(4))
	attemptsB := outB.dumps[b.name].Status.Attempts
	g.Expect(attemptsB).To(BeNumerically(">=", 2), "4 failures of one part should fail the whole attempt")

	expectBucket(t, n.bucket, []coredogv1.CoreDump{outA.dumps[a.name], outB.dumps[b.name]})
	g.Expect(multipartUploads(t, n.bucket)).To(BeEmpty(), "the failed upload's parts should be aborted")
	parts := 0
	for _, r := range proxy.Requests() {
		q, _ := url.ParseQuery(r.RawQuery)
		if r.Method == http.MethodPut && q.Has("uploadId") && q.Get("partNumber") == "2" {
			parts++
		}
	}
	t.Logf("dump A: 1 failed part request, %d upload attempt(s), stored %s after the drop; dump B: 4 failed part requests, %d attempts, stored %s after the drop; %d requests for part 2 in all",
		attemptsA, outA.converged.Round(time.Millisecond), attemptsB, outB.converged.Round(time.Millisecond), parts)
	recordFault(t, faultRow{
		Group:    "storage",
		Injected: fmt.Sprintf("500 on part 2 of a multipart upload: once (dump A), 4 times in a row (dump B); %s of data each", coredogv1.DisplaySize(size/every)),
		Checked:  fmt.Sprintf("A: the S3 client retries the part (%d attempt); B: the attempt fails, its upload is aborted, the manager retries (%d attempts); each Uploaded once, objects equal the files", attemptsA, attemptsB),
		Dumps:    2, Lost: outB.lost, Duplicated: outB.duplicated, LeftOnNode: outB.left,
		Converged: max(outA.converged, outB.converged),
	})
}

// TestFaultStorageSlow injects an S3 server that answers at 1 MiB/s (all
// request and response bodies through the fault proxy together): a dump of
// 8 MiB of random data and 3 small files (64 MiB and 10 files in the full
// matrix) are dropped at once. It checks: every file has exactly one
// CoreDump, Uploaded (no attempt times out for good), its object equal to
// the file; nothing else in the bucket; the node's files are deleted. The
// time to store everything, from the drop, is the convergence time.
func TestFaultStorageSlow(t *testing.T) {
	n, proxy := sfNode(t, "fs-slow")
	const rate = 1 << 20
	proxy.Throttle(rate)
	size := faultScale[int64](8<<20, 64<<20)
	small := faultScale(3, 10)
	start := time.Now()
	files := []fxFile{fxDropSparse(t, n, coreName("big-6", "big", 12201), size, 1, 24)}
	for i := range small {
		files = append(files, fxDropSmall(t, n, coreName("small-6", "small", int64(12210+i)), 800+i, 256<<10))
	}
	out := fxConverge(t, n, files, start, 3*time.Duration(size/rate)*time.Second+2*uploadTimeout)
	proxy.Throttle(0)
	var stored int64
	var attempts []int32
	for _, f := range files {
		cd := out.dumps[f.name]
		attempts = append(attempts, cd.Status.Attempts)
		if cd.Status.Storage != nil {
			stored += cd.Status.Storage.StoredSize
		}
	}
	t.Logf("%s stored through a 1 MiB/s link in %s (%.2f MiB/s); attempts per dump %v",
		coredogv1.DisplaySize(stored), out.converged.Round(time.Millisecond), float64(stored)/(1<<20)/out.converged.Seconds(), attempts)
	recordFault(t, faultRow{
		Group:    "storage",
		Injected: fmt.Sprintf("S3 throttled to 1 MiB/s; a dump of %s of random data and %d small files dropped at once", coredogv1.DisplaySize(size), small),
		Checked:  "each Uploaded once, objects equal the files; converged = drop to all stored",
		Dumps:    len(files), Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// TestFaultStorageBucketDeleted injects the bucket's deletion: the node's
// bucket is emptied and deleted, and 3 files are dropped (8 in the full
// matrix); 10 s later (2 minutes in the full matrix) the bucket is created
// again. It checks: meanwhile each dump is Uploading, retrying, with a
// status message that names the missing bucket, a Warning event
// UploadRetrying on the CoreDump once the third attempt failed, and its
// file kept on the node; the manager keeps retrying (with capped
// exponential backoff, for --max-upload-attempts attempts, about 34
// minutes by default), so once the bucket is back every file ends with exactly one
// CoreDump, Uploaded, with its object equal to the file, and the node's
// files are deleted.
func TestFaultStorageBucketDeleted(t *testing.T) {
	n := newNode(t, "fs-nobucket", nodeOpts{})
	gone := faultScale(10*time.Second, 2*time.Minute)
	count := faultScale(3, 8)
	ctx := context.Background()
	for _, k := range listKeys(t, n.bucket) {
		_, err := s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(n.bucket), Key: aws.String(k)})
		must(t, err)
	}
	_, err := s3c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(n.bucket)})
	must(t, err)
	deleted := time.Now()
	recreated := false
	t.Cleanup(func() {
		if !recreated {
			_, _ = s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(n.bucket)})
		}
	})

	var files []fxFile
	for i := range count {
		files = append(files, fxDropSmall(t, n, coreName("small-7", "small", int64(12300+i)), 900+i, 192<<10))
	}
	msgs := sfWaitRetrying(t, n, files, 3, gone+30*time.Second)
	for name, m := range msgs {
		if !strings.Contains(m, "NoSuchBucket") && !strings.Contains(m, "does not exist") {
			t.Errorf("%s: the status does not say the bucket is missing: %s", name, m)
		}
	}
	var warnings map[string][]string
	NewWithT(t).Eventually(func(g Gomega) {
		warnings = sfWarnings(g, coredogv1.EventUploadRetrying)
		byFile := n.dumpsByFile(g)
		for _, f := range files {
			g.Expect(warnings[byFile[f.name][0].Name]).To(HaveLen(1), "Warning events on the CoreDump of %s", f.name)
		}
	}).WithTimeout(10 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
	for _, f := range files {
		if fxGone(n, f.name) {
			t.Errorf("%s left the node while its bucket was gone", f.name)
		}
	}
	if cds := n.dumpsByFile(NewWithT(t))[files[0].name]; len(cds) == 1 && len(warnings[cds[0].Name]) > 0 {
		t.Logf("while the bucket was gone, e.g. the Warning: %s", warnings[cds[0].Name][0])
	}

	time.Sleep(time.Until(deleted.Add(gone)))
	_, err = s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(n.bucket)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		t.Fatal(err)
	}
	recreated = true
	back := time.Now()
	out := fxConverge(t, n, files, back, 6*time.Minute)
	var attempts []int32
	for _, f := range files {
		attempts = append(attempts, out.dumps[f.name].Status.Attempts)
	}
	t.Logf("bucket gone for %s; all %d dumps Uploaded %s after it was created again; attempts per dump %v",
		back.Sub(deleted).Round(time.Millisecond), len(files), out.converged.Round(time.Millisecond), attempts)
	recordFault(t, faultRow{
		Group:    "storage",
		Injected: fmt.Sprintf("the bucket deleted for %s, %d files dropped meanwhile; then created again", gone, count),
		Checked:  "meanwhile Uploading/UploadRetrying naming the missing bucket, one Warning event UploadRetrying per dump, files kept; the manager keeps retrying (capped backoff), so each is Uploaded once after the bucket is back",
		Dumps:    len(files), Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}

// sfRestartManager replaces the suite's manager with one started with
// extra flags, for the rest of the test.
func sfRestartManager(t *testing.T, extra ...string) {
	t.Helper()
	must(t, manager.Stop(stopGrace))
	args := append([]string{
		"--kubeconfig", cp.Kubeconfig,
		"--namespace", ns,
		"--agent-image", agentImage,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(managerHealth),
	}, extra...)
	p, err := localcluster.StartProcess("manager", logDir, managerBin, args, nil)
	must(t, err)
	manager = p
	t.Cleanup(func() {
		_ = manager.Stop(stopGrace)
		if err := startManager(); err != nil {
			t.Errorf("restarting the manager: %v", err)
		}
	})
	if err := localcluster.WaitReady(p, fmt.Sprintf("http://127.0.0.1:%d/readyz", managerHealth), readyTimeout); err != nil {
		t.Fatalf("%v\n%s", err, p.Tail(40))
	}
}

// TestFaultStorageHangs injects an S3 server that hangs: the first request
// for part 2 of a multipart upload (a dump of 32 MiB of data) is accepted
// and never answered, its body never read. The full matrix runs the
// manager as shipped (--upload-stall-timeout 2m); the short form restarts
// it with 10 s. It checks: the stalled attempt is given up (its status
// says it made no progress), its multipart upload aborted, and the dump
// retried: it ends Uploaded with exactly one CoreDump and one object equal
// to the file, nothing else in the bucket, the node's file deleted.
func TestFaultStorageHangs(t *testing.T) {
	g := NewWithT(t)
	stall := faultScale(10*time.Second, upload.DefaultStallTimeout)
	if !fullFaults() {
		sfRestartManager(t, "--upload-stall-timeout", stall.String())
	}
	n, proxy := sfNode(t, "fs-hang")
	rule := proxy.AddRule(&localcluster.FaultRule{Match: localcluster.MatchS3UploadPart(2), Hang: true})
	const size, every = 64 << 20, 2
	start := time.Now()
	f := fxDropSparse(t, n, coreName("big-10", "big", 12401), size, every, 25)
	out := fxConverge(t, n, []fxFile{f}, start, stall+2*uploadTimeout)
	// The status moved on; the manager's log keeps why the first attempt
	// that reached the agent failed (an attempt made before the agent's
	// certificate was issued finds no usable endpoint in its Lease, and
	// dials nothing).
	var gaveUp string
	for line := range strings.SplitSeq(localcluster.TailFile(manager.LogPath, 100000), "\n") {
		if strings.Contains(line, "Upload failed; retrying") && strings.Contains(line, out.dumps[f.name].Name) &&
			!strings.Contains(line, "has no usable endpoint") {
			gaveUp = line
			break
		}
	}
	g.Expect(gaveUp).To(ContainSubstring(upload.ErrStalled.Error()), "the first attempt should be given up as stalled")
	g.Expect(rule.Fired()).To(Equal(1))
	cd := out.dumps[f.name]
	t.Logf("Uploaded %s after the drop (attempts %d), with the stall timeout at %s", out.converged.Round(time.Millisecond), cd.Status.Attempts, stall)
	g.Eventually(func() []string { return multipartUploads(t, n.bucket) }).WithTimeout(30 * time.Second).WithPolling(200 * time.Millisecond).Should(BeEmpty())
	recordFault(t, faultRow{
		Group:    "storage",
		Injected: "S3 hangs: one part upload of a 32 MiB dump accepted, never read or answered",
		Checked:  fmt.Sprintf("the attempt is given up after --upload-stall-timeout (%s), its upload aborted, and retried: Uploaded once, object equals the file", stall),
		Dumps:    1, Lost: out.lost, Duplicated: out.duplicated, LeftOnNode: out.left, Converged: out.converged,
	})
}
