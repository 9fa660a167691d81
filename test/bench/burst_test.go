package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coredog/coredog/test/localcluster"
)

const (
	burstAgents   = 100
	burstPerAgent = 10
	burstFileSize = 1 << 20
)

// burstResult is many dumps across many agents at once.
type burstResult struct {
	Agents, Dumps int
	FileSize      int64
	// Seconds from the first file's completion to the last Uploaded.
	Seconds     float64
	P50, P99    float64 // per-dump seconds, completion to Uploaded
	ManagerCPU  float64
	ManagerHWM  int64
	ManagerAnon int64
	AgentsCPU   float64 // all agents together
	AgentMaxHWM int64
	AgentsRSS   int64 // all agents together, at the end
	S3CPU       float64
	Rename      float64 // seconds to complete all files
	AgentStart  float64 // seconds to start and ready all agents
	AgentsAnon  int64   // all agents' RssAnon at the end (file pages are shared)
	// APIServerCPU and EtcdCPU over the burst.
	APIServerCPU, EtcdCPU float64
	// From the manager's metrics: CoreDump reconciles, their mean time,
	// mean wait in the work queue, and mean upload (agent → store) time.
	Reconciles                           float64
	ReconcileMean, QueueMean, UploadMean float64
	Uploads                              float64
	// Busy is how many cores the whole machine kept busy over the burst.
	Busy float64
}

// runBurst starts burstAgents agent processes, one per simulated node (an
// agent serves one node), a fresh manager, and completes burstPerAgent files
// in each agent's directory at once; it measures until every dump is
// Uploaded (S3, zstd).
func runBurst(b *testing.B, s *suite) burstResult {
	const policy = "burst"
	res := burstResult{Agents: burstAgents, Dumps: burstAgents * burstPerAgent, FileSize: burstFileSize}
	metricsPort, err := localcluster.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	mgr, err := s.startManager("manager-burst", "--metrics-bind-address", "127.0.0.1:"+strconv.Itoa(metricsPort), "--metrics-secure=false")
	if err != nil {
		b.Fatal(err)
	}
	agents := make([]*localcluster.Process, burstAgents)
	dirs := make([]string, burstAgents)
	defer func() {
		stopAll(mgr)
		var wg sync.WaitGroup
		for _, a := range agents {
			if a != nil {
				wg.Go(func() { stopAll(a) })
			}
		}
		wg.Wait()
		if err := s.cleanPipeline(policy, "s3"); err != nil {
			b.Error(err)
		}
		for _, d := range dirs {
			_ = os.RemoveAll(d)
		}
	}()

	// Start the agents, a few at a time.
	start := time.Now()
	sem := make(chan struct{}, 8)
	errs := make(chan error, burstAgents)
	var wg sync.WaitGroup
	for i := range burstAgents {
		dirs[i] = filepath.Join(s.policyDir(policy), fmt.Sprintf("node-%03d", i))
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			a, err := s.startAgent(agentOpts{policy: policy, node: fmt.Sprintf("burst-node-%03d", i), dir: dirs[i]})
			if err != nil {
				errs <- err
				return
			}
			agents[i] = a
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	res.AgentStart = time.Since(start).Seconds()
	logf("burst: %d agents ready in %.1fs", burstAgents, res.AgentStart)

	// The files, under hidden names, then renamed into place all at once.
	type pending struct{ hidden, final, name string }
	// Interleaved across the nodes, as crashes across a fleet would come.
	files := make([]pending, res.Dumps)
	for i := range burstAgents {
		for j := range burstPerAgent {
			name := coreFileName(fmt.Sprintf("burst%03d", i), "app")
			p := pending{filepath.Join(dirs[i], ".gen-"+name), filepath.Join(dirs[i], name), name}
			if _, err := writeCoreLike(p.hidden, burstFileSize, true, uint64(i*burstPerAgent+j)); err != nil {
				b.Fatal(err)
			}
			files[j*burstAgents+i] = p
		}
	}
	time.Sleep(time.Second)

	m0, err := readProc(pidOf(mgr))
	if err != nil {
		b.Fatal(err)
	}
	a0 := map[int]procStat{}
	for _, a := range agents {
		st, _ := readProc(pidOf(a))
		a0[pidOf(a)] = st
	}
	v0, _ := readProc(pidOf(s.s3proc))
	cpPIDs := controlPlanePIDs()
	api0, _ := readProc(cpPIDs["kube-apiserver"])
	etcd0, _ := readProc(cpPIDs["etcd"])
	metricsURL := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	met0, _ := scrape(metricsURL)
	smp := startSampler(100*time.Millisecond, pidOf(mgr))

	completed := map[string]time.Time{}
	cpu0 := readCPUTimes()
	start = time.Now()
	for _, f := range files {
		if err := os.Rename(f.hidden, f.final); err != nil {
			b.Fatal(err)
		}
		completed[f.name] = time.Now()
	}
	res.Rename = time.Since(start).Seconds()
	err = within(10*time.Minute, func(ctx context.Context) error {
		return s.tracker.waitCounts(ctx, policy, res.Dumps, res.Dumps)
	})
	end := time.Now()
	cpu1 := readCPUTimes()
	m1, _ := readProc(pidOf(mgr))
	v1, _ := readProc(pidOf(s.s3proc))
	api1, _ := readProc(cpPIDs["kube-apiserver"])
	etcd1, _ := readProc(cpPIDs["etcd"])
	met1, _ := scrape(metricsURL)
	peaks := smp.finish()
	if err != nil {
		b.Fatalf("burst: %v\n--- manager ---\n%s", err, mgr.Tail(30))
	}
	var last time.Time
	var lat []float64
	for _, d := range s.tracker.all(policy) {
		if d.Uploaded.After(last) {
			last = d.Uploaded
		}
		if c, ok := completed[d.File]; ok {
			lat = append(lat, d.Uploaded.Sub(c).Seconds())
		}
	}
	if last.IsZero() {
		last = end
	}
	sort.Float64s(lat)
	res.Seconds = last.Sub(start).Seconds()
	res.P50, res.P99 = percentile(lat, 50), percentile(lat, 99)
	res.ManagerCPU = (m1.CPU - m0.CPU).Seconds()
	res.ManagerHWM = max(m1.HWM, peaks[pidOf(mgr)].RSS)
	res.ManagerAnon = max(m1.Anon, peaks[pidOf(mgr)].Anon)
	res.S3CPU = (v1.CPU - v0.CPU).Seconds()
	res.Busy, _ = busyCores(cpu0, cpu1)
	res.APIServerCPU, res.EtcdCPU = (api1.CPU - api0.CPU).Seconds(), (etcd1.CPU - etcd0.CPU).Seconds()
	delta := func(name string) float64 { return met1[name] - met0[name] }
	mean := func(base string) float64 {
		if n := delta(base + "_count"); n > 0 {
			return delta(base+"_sum") / n
		}
		return 0
	}
	const ctl = `{controller="coredump"}`
	res.Reconciles = delta("controller_runtime_reconcile_time_seconds_count" + ctl)
	if n := delta("controller_runtime_reconcile_time_seconds_count" + ctl); n > 0 {
		res.ReconcileMean = delta("controller_runtime_reconcile_time_seconds_sum"+ctl) / n
	}
	if n := delta(`workqueue_queue_duration_seconds_count{controller="coredump",name="coredump"}`); n > 0 {
		res.QueueMean = delta(`workqueue_queue_duration_seconds_sum{controller="coredump",name="coredump"}`) / n
	}
	res.Uploads = delta("coredog_upload_duration_seconds_count")
	res.UploadMean = mean("coredog_upload_duration_seconds")
	for _, a := range agents {
		st, err := readProc(pidOf(a))
		if err != nil {
			continue
		}
		res.AgentsCPU += (st.CPU - a0[pidOf(a)].CPU).Seconds()
		res.AgentMaxHWM = max(res.AgentMaxHWM, st.HWM)
		res.AgentsRSS += st.RSS
		res.AgentsAnon += st.Anon
	}
	return res
}
