package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/test/localcluster"
	"github.com/coredog/coredog/test/testcrash"
)

const crashTouchMiB = 256

// crashResult is one real crash, from the signal to the stored dump.
type crashResult struct {
	Store    string
	CoreSize int64
	// Seconds from the signal (the crasher's last line, written just
	// before it faults) and from its exit (waitpid: the kernel has
	// written the core) to Uploaded; CoreWrite between the two; Detect
	// from the exit to the CoreDump's creation.
	FromSignal, FromExit, CoreWrite, Detect float64
	ViaGDB                                  bool
}

// crashSummary is one store's crashes with the processes' figures over all
// of them.
type crashSummary struct {
	Store      string
	Runs       []crashResult
	AgentHWM   int64
	ManagerHWM int64
}

// runCrashes crashes the test program n times with crashTouchMiB of touched
// heap, each in a staging directory on the watched directory's file system
// (core_pattern is "core": the kernel writes into the working directory),
// renames each core into the watched directory at once under the policy's
// file name pattern, and times it to Uploaded.
func runCrashes(b *testing.B, s *suite, store string, n int) crashSummary {
	policy := "crash-" + store
	dir := filepath.Join(s.policyDir(policy), "cores")
	mgr, err := s.startManager("manager-" + policy)
	if err != nil {
		b.Fatal(err)
	}
	// The real /proc: the file name's PID is the crashed process's, gone
	// once it has exited.
	agent, err := s.startAgent(agentOpts{policy: policy, node: policy, dir: dir, realProc: true})
	if err != nil {
		stopAll(mgr)
		b.Fatal(err)
	}
	procs := []*localcluster.Process{agent, mgr}
	defer func() {
		stopAll(procs...)
		if err := s.cleanPipeline(policy, store); err != nil {
			b.Error(err)
		}
	}()
	if err := waitIdle(250*time.Millisecond, 10*time.Second, pidOf(agent), pidOf(mgr)); err != nil {
		b.Fatal(err)
	}
	sum := crashSummary{Store: store}
	smp := startSampler(50*time.Millisecond, pidOf(agent), pidOf(mgr))
	for i := range n {
		staging := filepath.Join(s.dir, "staging", fmt.Sprintf("%s-%d", store, i))
		if err := os.MkdirAll(staging, 0o755); err != nil {
			b.Fatal(err)
		}
		c, err := crashOnce(b, s.crashy, staging, dir)
		if err != nil {
			b.Fatal(err)
		}
		var seen dumpSeen
		err = within(2*time.Minute, func(ctx context.Context) error {
			var err error
			seen, err = s.tracker.waitUploaded(ctx, policy, c.name)
			return err
		})
		if err != nil {
			b.Fatalf("crash %d: %v\n--- manager ---\n%s\n--- agent ---\n%s", i, err, mgr.Tail(20), agent.Tail(20))
		}
		sum.Runs = append(sum.Runs, crashResult{
			Store: store, CoreSize: c.size, ViaGDB: c.viaGDB,
			FromSignal: seen.Uploaded.Sub(c.signal).Seconds(),
			FromExit:   seen.Uploaded.Sub(c.exit).Seconds(),
			CoreWrite:  c.exit.Sub(c.signal).Seconds(),
			Detect:     seen.Added.Sub(c.exit).Seconds(),
		})
		_ = os.RemoveAll(staging)
		time.Sleep(200 * time.Millisecond)
	}
	a, err1 := readProc(pidOf(agent))
	m, err2 := readProc(pidOf(mgr))
	peaks := smp.finish()
	if err := errors.Join(err1, err2); err != nil {
		b.Fatal(err)
	}
	sum.AgentHWM, sum.ManagerHWM = max(a.HWM, peaks[pidOf(agent)].RSS), max(m.HWM, peaks[pidOf(mgr)].RSS)
	return sum
}

type crashed struct {
	name         string
	size         int64
	signal, exit time.Time
	viaGDB       bool
}

// crashOnce runs the crasher as testcrash.Run does (RLIMIT_CORE raised, exec
// so the PID is the crasher's), but reads its output as it comes, to know
// when it is about to fault, and renames the core into dir.
func crashOnce(b *testing.B, prog, staging, dir string) (crashed, error) {
	var c crashed
	script := `ulimit -c unlimited 2>/dev/null || ulimit -S -c "$(ulimit -H -c)"; exec "$0" "$@"`
	cmd := exec.Command("sh", "-c", script, prog, fmt.Sprintf("--touch=%d", crashTouchMiB))
	cmd.Dir = staging
	out, err := cmd.StdoutPipe()
	if err != nil {
		return c, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return c, err
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	c.signal = time.Now()
	werr := cmd.Wait()
	c.exit = time.Now()
	pid := cmd.Process.Pid
	if !strings.HasPrefix(line, "pid=") {
		return c, fmt.Errorf("crasher printed %q, then: %v", line, werr)
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	core := ""
	if ws.Signaled() && ws.CoreDump() {
		for _, name := range []string{"core", "core." + strconv.Itoa(pid)} {
			if st, err := os.Stat(filepath.Join(staging, name)); err == nil && st.Size() > 0 {
				core = filepath.Join(staging, name)
			}
		}
	}
	if core == "" {
		// No kernel core here (a pipe handler or another pattern on this
		// machine): take one with gdb, as testcrash does, and say so.
		tc, err := testcrash.Run(prog, staging, b.Logf, fmt.Sprintf("--touch=%d", crashTouchMiB))
		if err != nil {
			return c, err
		}
		c.exit, c.signal, c.viaGDB, core, pid = time.Now(), time.Now(), true, tc.Core, tc.PID
	}
	c.name = fmt.Sprintf("core.crash.crashy.%d.11.%d", pid, time.Now().Unix())
	if err := os.Rename(core, filepath.Join(dir, c.name)); err != nil {
		return c, err
	}
	st, err := os.Stat(filepath.Join(dir, c.name))
	if err != nil {
		return c, err
	}
	c.size = st.Size()
	return c, nil
}
