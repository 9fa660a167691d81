package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/localcluster"
)

// layout is one file size and shape of the pipeline benchmark.
type layout struct {
	Label string
	Size  int64
	Dense bool
}

var layouts = []layout{
	{"256MiB-sparse", 256 << 20, false},
	{"1GiB-sparse", 1 << 30, false},
	{"1GiB-dense", 1 << 30, true},
	{"4GiB-sparse", 4 << 30, false},
}

// pipelineResult is one dump through agent → manager → storage.
type pipelineResult struct {
	Layout      layout
	Store       string
	Compression coredogv1.Compression
	File        coreStats
	// Seconds from the rename that completes the file to the Uploaded
	// phase; Detect to the CoreDump's creation, Queue from there to the
	// Uploading phase, Transfer from there to Uploaded.
	Seconds, Detect, Queue, Transfer float64
	MiBps                            float64
	Stored                           int64
	// Peak RSS (VmHWM) and peak anonymous RSS (sampled) of each process.
	AgentHWM, AgentAnon     int64
	ManagerHWM, ManagerAnon int64
	AgentCPU                float64
	ManagerCPU              float64
	// S3CPU is versitygw's CPU time over the run (S3 runs only).
	S3CPU float64
	// Busy is how many cores the whole machine kept busy over the run;
	// Others the part of it not spent by the agent, the manager and the
	// S3 server (the control plane, the benchmark, other jobs).
	Busy, Others float64
}

var fakePID atomic.Int64

func init() { fakePID.Store(1_000_000) }

// coreFileName is a name under the default pattern core.%h.%e.%P.%s.%t
// with a PID no process has.
func coreFileName(host, exe string) string {
	return fmt.Sprintf("core.%s.%s.%d.11.%d", host, exe, fakePID.Add(1), time.Now().Unix())
}

// runPipeline moves one generated file through fresh agent and manager
// processes into storage.
func runPipeline(b *testing.B, s *suite, l layout, store string, c coredogv1.Compression, peer func(path string)) pipelineResult {
	policy := pipePolicy(store, c)
	dir := filepath.Join(s.policyDir(policy), "cores")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	name := coreFileName("pipe", "app")
	hidden, final := filepath.Join(dir, ".gen-"+name), filepath.Join(dir, name)
	res := pipelineResult{Layout: l, Store: store, Compression: c}
	var err error
	if res.File, err = writeCoreLike(hidden, l.Size, !l.Dense, 42); err != nil {
		b.Fatal(err)
	}
	defer os.Remove(hidden)
	if peer != nil {
		peer(hidden)
	}

	var extra []string
	pprofPort := 0
	if pprofDir() != "" {
		if pprofPort, err = localcluster.FreePort(); err != nil {
			b.Fatal(err)
		}
		extra = append(extra, "--pprof-bind-address", "127.0.0.1:"+strconv.Itoa(pprofPort))
	}
	mgr, err := s.startManager("manager-"+policy, extra...)
	if err != nil {
		b.Fatal(err)
	}
	agent, err := s.startAgent(agentOpts{policy: policy, node: policy, dir: dir})
	if err != nil {
		stopAll(mgr)
		b.Fatal(err)
	}
	var procs = []*localcluster.Process{agent, mgr}
	defer func() {
		stopAll(procs...)
		if err := s.cleanPipeline(policy, store); err != nil {
			b.Error(err)
		}
		_ = os.Remove(final)
	}()
	if err := waitIdle(250*time.Millisecond, 10*time.Second, pidOf(agent), pidOf(mgr)); err != nil {
		b.Fatal(err)
	}
	a0, err1 := readProc(pidOf(agent))
	m0, err2 := readProc(pidOf(mgr))
	v0, _ := readProc(pidOf(s.s3proc))
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	smp := startSampler(100*time.Millisecond, pidOf(agent), pidOf(mgr))

	cpu0 := readCPUTimes()
	start := time.Now()
	if err := os.Rename(hidden, final); err != nil {
		b.Fatal(err)
	}
	timeout := 2*time.Minute + time.Duration(l.Size/(10<<20))*time.Second
	var seen dumpSeen
	err = within(timeout, func(ctx context.Context) error {
		var err error
		seen, err = s.tracker.waitUploaded(ctx, policy, name)
		return err
	})
	if pprofPort != 0 && err == nil {
		saveManagerHeap(b, pprofPort, fmt.Sprintf("%s-%s-%s", l.Label, strings.ToLower(string(c)), store))
	}
	a1, err1 := readProc(pidOf(agent))
	m1, err2 := readProc(pidOf(mgr))
	v1, _ := readProc(pidOf(s.s3proc))
	cpu1 := readCPUTimes()
	peaks := smp.finish()
	if err != nil {
		b.Fatalf("%s %s %s: %v\n--- manager ---\n%s\n--- agent ---\n%s", l.Label, c, store, err, mgr.Tail(20), agent.Tail(20))
	}
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	res.Seconds = seen.Uploaded.Sub(start).Seconds()
	res.Detect = seen.Added.Sub(start).Seconds()
	res.Queue = seen.Uploading.Sub(seen.Added).Seconds()
	res.Transfer = seen.Uploaded.Sub(seen.Uploading).Seconds()
	res.MiBps = mibOf(l.Size) / res.Seconds
	res.Stored = seen.StoredSize
	res.AgentHWM = max(a1.HWM, peaks[pidOf(agent)].RSS)
	res.ManagerHWM = max(m1.HWM, peaks[pidOf(mgr)].RSS)
	res.AgentAnon = max(a1.Anon, peaks[pidOf(agent)].Anon)
	res.ManagerAnon = max(m1.Anon, peaks[pidOf(mgr)].Anon)
	res.AgentCPU = (a1.CPU - a0.CPU).Seconds()
	res.ManagerCPU = (m1.CPU - m0.CPU).Seconds()
	if store == "s3" {
		res.S3CPU = (v1.CPU - v0.CPU).Seconds()
	}
	if busy, ok := busyCores(cpu0, cpu1); ok {
		res.Busy = busy
		res.Others = max(0, busy-(res.AgentCPU+res.ManagerCPU+res.S3CPU)/time.Since(start).Seconds())
	}
	return res
}

// pprofDir is where runs save the manager's heap profile after the upload
// (COREDOG_BENCH_PPROF); empty means no profiling endpoint is opened.
func pprofDir() string { return os.Getenv("COREDOG_BENCH_PPROF") }

// saveManagerHeap writes the manager's heap profile, in pprof's binary form
// and as text with the runtime's memory statistics, into pprofDir.
func saveManagerHeap(b *testing.B, port int, name string) {
	for _, f := range []struct{ query, ext string }{{"", ".heap"}, {"?debug=1", ".heap.txt"}} {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/heap%s", port, f.query))
		if err != nil {
			b.Logf("manager heap profile: %v", err)
			return
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			err = os.WriteFile(filepath.Join(pprofDir(), name+f.ext), data, 0o644)
		}
		if err != nil {
			b.Logf("manager heap profile: %v", err)
		}
	}
}

// cleanPipeline removes a run's CoreDump and stored objects.
func (s *suite) cleanPipeline(policy, store string) error {
	return within(2*time.Minute, func(ctx context.Context) error {
		if err := s.purge(ctx, policy); err != nil {
			return err
		}
		if store != "s3" {
			return os.RemoveAll(s.fileStore(policy))
		}
		return s.emptyBucket(ctx, bucketOf(policy))
	})
}

func (s *suite) emptyBucket(ctx context.Context, bucket string) error {
	p := s3.NewListObjectsV2Paginator(s.s3c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		for _, o := range page.Contents {
			if _, err := s.s3c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: o.Key}); err != nil {
				return err
			}
		}
	}
	return nil
}
