package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/agent/analyze"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/testcrash"
)

// The backtrace benchmark: a real core of backtraceHeapMiB MiB of touched
// heap and backtraceThreads threads, each blocked some frames deep, unwound
// by the agent's analysis as at capture, with the binaries on the node.
const (
	backtraceHeapMiB     = 1024
	backtraceThreads     = 64
	backtraceRuns        = 5
	targetBacktraceCPU   = 200.0    // ms
	targetBacktraceAlloc = 16 << 20 // bytes
)

const backtraceSource = `#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>
#define WORKERS 63
static pthread_barrier_t ready;
__attribute__((noinline)) void depth(int n) {
	if (n > 0) { depth(n - 1); __asm__ volatile("" ::: "memory"); return; }
	pthread_barrier_wait(&ready);
	pause();
}
static void *worker(void *arg) { depth(8 + (int)(long)arg % 8); return NULL; }
int main(int argc, char **argv) {
	size_t n = (size_t)atol(argv[1]) << 20;
	char *p = malloc(n);
	for (size_t i = 0; p && i < n; i += 4096) p[i] = 1;
	pthread_barrier_init(&ready, NULL, WORKERS + 1);
	pthread_t t;
	for (long i = 0; i < WORKERS; i++) pthread_create(&t, NULL, worker, (void *)i);
	pthread_barrier_wait(&ready);
	*(volatile int *)0 = 1;
	return 0;
}
`

type backtraceResult struct {
	CoreBytes  int64
	Threads    int
	Frames     int
	Outcome    coredogv1.AnalysisOutcome
	CPUms      float64 // median over the runs, utime+stime of the process
	Wallms     float64
	AllocBytes uint64 // median of the bytes allocated by one analysis
	HeapInUse  uint64 // largest heap in use right after an analysis
}

// BenchmarkBacktrace unwinds every thread of a 1 GiB core with 64 threads.
func BenchmarkBacktrace(b *testing.B) {
	for range b.N {
		r := runBacktrace(b)
		rep.add(func(r0 *results) { r0.Backtrace = append(r0.Backtrace, r) })
		b.ReportMetric(r.CPUms, "cpu-ms")
		b.ReportMetric(r.Wallms, "wall-ms")
		b.ReportMetric(mibOf(int64(r.AllocBytes)), "alloc-MiB")
		b.ReportMetric(float64(r.Frames), "frames")
		logf("backtrace: %d MiB core, %d threads, %d frames, %s: %.0f ms CPU, %.0f ms wall, %.1f MiB allocated, heap in use %.1f MiB",
			r.CoreBytes>>20, r.Threads, r.Frames, r.Outcome, r.CPUms, r.Wallms, mibOf(int64(r.AllocBytes)), mibOf(int64(r.HeapInUse)))
	}
}

func runBacktrace(b *testing.B) backtraceResult {
	b.Helper()
	dir := b.TempDir()
	src := filepath.Join(dir, "threads.c")
	prog := filepath.Join(dir, "threads")
	if err := os.WriteFile(src, []byte(backtraceSource), 0o600); err != nil {
		b.Fatal(err)
	}
	if out, err := exec.Command("gcc", "-O2", "-fomit-frame-pointer", "-g", "-pthread", "-Wl,--build-id", "-o", prog, src).CombinedOutput(); err != nil {
		b.Fatalf("gcc: %v\n%s", err, out)
	}
	crash, err := testcrash.Run(prog, dir, b.Logf, strconv.Itoa(backtraceHeapMiB))
	if err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(crash.Core)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	res := backtraceResult{CoreBytes: st.Size()}
	var cpus, walls []float64
	var allocs []uint64
	for range backtraceRuns {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c0 := processCPU()
		t0 := time.Now()
		a := analyze.Analyze(f, st.Size(), analyze.HostRoot{Root: "/"})
		walls = append(walls, float64(time.Since(t0).Microseconds())/1000)
		cpus = append(cpus, float64((processCPU()-c0).Microseconds())/1000)
		runtime.ReadMemStats(&after)
		allocs = append(allocs, after.TotalAlloc-before.TotalAlloc)
		res.HeapInUse = max(res.HeapInUse, after.HeapInuse)
		res.Threads, res.Outcome, res.Frames = len(a.Stacks), a.Outcome, 0
		for _, s := range a.Stacks {
			res.Frames += len(s.Frames)
		}
	}
	slices.Sort(cpus)
	slices.Sort(walls)
	slices.Sort(allocs)
	res.CPUms, res.Wallms, res.AllocBytes = cpus[len(cpus)/2], walls[len(walls)/2], allocs[len(allocs)/2]
	return res
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
