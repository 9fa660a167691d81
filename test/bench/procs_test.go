package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/coredog/coredog/test/localcluster"
)

// startManager starts the manager binary with a fresh process (so that its
// peak RSS is its own) and waits until it is ready. extra flags come last,
// so they override the defaults here.
func (s *suite) startManager(name string, extra ...string) (*localcluster.Process, error) {
	health, err := localcluster.FreePort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig", s.cp.Kubeconfig,
		"--namespace", ns,
		"--agent-image", agentImage,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(health),
	}
	args = append(args, extra...)
	p, err := localcluster.StartProcess(name, s.logDir, s.managerBin, args, []string{"SSL_CERT_FILE=" + s.s3tls.CertFile})
	if err != nil {
		return nil, err
	}
	if err := localcluster.WaitReady(p, fmt.Sprintf("http://127.0.0.1:%d/readyz", health), readyTimeout); err != nil {
		p.Kill()
		return nil, fmt.Errorf("%w\n%s", err, p.Tail(40))
	}
	return p, nil
}

// agentOpts shape one agent process, which serves one node.
type agentOpts struct {
	policy, node string
	// dir is the watched directory; procRoot the agent's --proc-root
	// (an empty directory of the suite's unless realProc).
	dir          string
	realProc     bool
	poll         time.Duration
	disableWatch bool
}

// startAgent starts an agent as the DaemonSet would run it and waits until
// it is ready.
func (s *suite) startAgent(o agentOpts) (*localcluster.Process, error) {
	if o.poll == 0 {
		o.poll = 10 * time.Second
	}
	if o.dir == "" {
		o.dir = filepath.Join(s.policyDir(o.policy), "cores")
	}
	procRoot := "/proc"
	if !o.realProc {
		// No PID exists here: a file is complete once its size is confirmed.
		procRoot = filepath.Join(s.dir, "empty-proc")
	}
	for _, d := range []string{o.dir, procRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	// A port found free may be taken before the agent binds it; then the
	// agent exits at once, and another port is tried.
	for attempt := 0; ; attempt++ {
		p, exited, err := s.startAgentOnce(o, procRoot)
		if err == nil || !exited || attempt == 2 {
			return p, err
		}
	}
}

// startAgentOnce starts an agent; exited says it ended by itself before it
// was ready.
func (s *suite) startAgentOnce(o agentOpts, procRoot string) (_ *localcluster.Process, exited bool, _ error) {
	health, err := localcluster.FreePort()
	if err != nil {
		return nil, false, err
	}
	args := []string{
		"--kubeconfig", s.cp.Kubeconfig,
		"--node-name", o.node,
		"--policy", o.policy,
		"--namespace", ns,
		"--dir", o.dir,
		"--proc-root=" + procRoot,
		"--listen", "127.0.0.1:0",
		"--tls-dir", s.tlsDir(o.policy),
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(health),
		"--metrics-bind-address", "0",
		"--poll-interval", o.poll.String(),
		"--min-node-free", "0%",
		"--max-node-usage", "0",
		// Every file of a benchmark becomes a CoreDump: no creation budget.
		"--node-burst=100000", "--signature-burst=100000",
	}
	if o.disableWatch {
		args = append(args, "--disable-watch")
	}
	p, err := localcluster.StartProcess("agent-"+o.node, filepath.Join(s.logDir, "agents"), s.agentBin, args, nil)
	if err != nil {
		return nil, false, err
	}
	if err := localcluster.WaitReady(p, fmt.Sprintf("http://127.0.0.1:%d/readyz", health), readyTimeout); err != nil {
		exited := p.Exited()
		p.Kill()
		return nil, exited, fmt.Errorf("%w\n%s", err, p.Tail(40))
	}
	return p, false, nil
}

// stopAll stops processes, logging (not failing on) the ones that needed a kill.
func stopAll(ps ...*localcluster.Process) {
	for _, p := range ps {
		if p != nil {
			if err := p.Stop(stopGrace); err != nil {
				logf("%v", err)
			}
		}
	}
}

// procStat is what /proc says about one process.
type procStat struct {
	// CPU is user plus system time.
	CPU time.Duration
	// HWM is the peak resident set (VmHWM), RSS the current one (VmRSS),
	// Anon and File its anonymous and file-backed parts (RssAnon, RssFile:
	// the latter is mostly the binary's own pages).
	HWM, RSS, Anon, File int64
}

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

func pidOf(p *localcluster.Process) int { return p.Cmd.Process.Pid }

// readProc reads CPU time from /proc/<pid>/stat and VmHWM and VmRSS from
// /proc/<pid>/status.
func readProc(pid int) (procStat, error) {
	var st procStat
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the command name (which may hold spaces) start at
	// field 3, state; utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return st, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return st, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return st, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	st.CPU = time.Duration(ut+stime) * clockTick
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch k {
		case "VmHWM":
			dst = &st.HWM
		case "VmRSS":
			dst = &st.RSS
		case "RssAnon":
			dst = &st.Anon
		case "RssFile":
			dst = &st.File
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		if err != nil {
			return st, fmt.Errorf("/proc/%d/status %s: %q", pid, k, v)
		}
		*dst = kb << 10
	}
	return st, nil
}

// waitIdle returns once the processes' CPU time, together, grew by at most
// one tick over a window, so that their start-up work (caches synced, the
// manager's policies reconciled, the agent's first scan and Lease) does not
// run into a measurement, or after timeout. A manager and agents that have
// been running a while, which is when dumps come, are this idle.
func waitIdle(window, timeout time.Duration, pids ...int) error {
	cpu := func() (time.Duration, error) {
		var sum time.Duration
		for _, pid := range pids {
			st, err := readProc(pid)
			if err != nil {
				return 0, err
			}
			sum += st.CPU
		}
		return sum, nil
	}
	deadline := time.Now().Add(timeout)
	last, err := cpu()
	for err == nil {
		time.Sleep(window)
		var now time.Duration
		if now, err = cpu(); err == nil {
			if now-last <= clockTick || time.Now().After(deadline) {
				return nil
			}
			last = now
		}
	}
	return err
}

// resetPeak resets a process's VmHWM to its current RSS (clear_refs 5,
// Linux 4.0 and later).
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// sampler samples VmRSS and RssAnon of some processes every interval until
// stopped, and keeps each one's maximum: a check on VmHWM, and the only
// measure of the anonymous (heap, stacks) part's peak.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	max  map[int]procStat
}

func startSampler(interval time.Duration, pids ...int) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{}), max: map[int]procStat{}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			for _, pid := range pids {
				if st, err := readProc(pid); err == nil {
					m := s.max[pid]
					m.RSS, m.Anon, m.File = max(m.RSS, st.RSS), max(m.Anon, st.Anon), max(m.File, st.File)
					s.max[pid] = m
				}
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *sampler) finish() map[int]procStat {
	close(s.stop)
	<-s.done
	return s.max
}

// within runs f with a timeout.
func within(d time.Duration, f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return f(ctx)
}

const mib = 1 << 20

func mibOf(n int64) float64 { return float64(n) / mib }

// scrape reads a Prometheus text endpoint: sample (name with labels) → value.
func scrape(url string) (map[string]float64, error) {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

// controlPlanePIDs finds the kube-apiserver and etcd this process started.
func controlPlanePIDs() map[string]int {
	out := map[string]int{}
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		open, closing := bytes.IndexByte(data, '('), bytes.LastIndexByte(data, ')')
		if open < 0 || closing < open {
			continue
		}
		comm := string(data[open+1 : closing])
		f := strings.Fields(string(data[closing+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self && (comm == "kube-apiserver" || comm == "etcd") {
			out[comm] = pid
		}
	}
	return out
}
