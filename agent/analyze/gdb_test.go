package analyze_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/coredog/coredog/agent/analyze"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
	"github.com/coredog/coredog/test/testcrash"
)

// The crashers: each is compiled in the test, run until the kernel writes
// its core, and its backtraces are compared with gdb's for the same core and
// binaries.
const cThreadStrlen = `#include <pthread.h>
#include <string.h>
__attribute__((noinline)) size_t level3(const char *s) { size_t n = strlen(s); __asm__ volatile("" ::: "memory"); return n + 1; }
__attribute__((noinline)) size_t level2(const char *s) { size_t n = level3(s); __asm__ volatile("" ::: "memory"); return n * 2; }
__attribute__((noinline)) void *worker(void *arg) { volatile size_t n = level2((const char *)arg); (void)n; return NULL; }
int main(void) {
	pthread_t t;
	pthread_create(&t, NULL, worker, NULL);
	pthread_join(t, NULL);
	return 0;
}
`

const cxxTerminate = `#include <stdexcept>
#include <cstdio>
namespace shop {
template <typename T> struct Cart {
	__attribute__((noinline)) void checkout(T n) noexcept { if (n > 0) throw std::runtime_error("out of stock"); std::puts("ok"); }
};
__attribute__((noinline)) void pay(int n) { Cart<int> c; c.checkout(n); __asm__ volatile("" ::: "memory"); }
}
int main(int argc, char **) { shop::pay(argc); return 0; }
`

const goNilDeref = `package main

type T struct{ x int }

//go:noinline
func crash(t *T) int { return t.x }

//go:noinline
func outer(t *T) int { return crash(t) + 1 }

func main() { println(outer(nil)) }
`

// crasher describes one program of the oracle test.
type crasher struct {
	name   string
	lang   string // "c", "c++", "go"
	source string
	flags  []string
	strip  bool
	// crashFunc is a function the crashing thread must show.
	crashFunc string
	// diffs are the documented differences from gdb this crasher shows.
	diffs crasherDiffs
}

var crashers = []crasher{
	{name: "c-thread-strlen", lang: "c", source: cThreadStrlen, flags: []string{"-O2", "-fomit-frame-pointer", "-g", "-pthread"}, crashFunc: "level3"},
	{name: "c-thread-strlen-stripped", lang: "c", source: cThreadStrlen, flags: []string{"-O2", "-fomit-frame-pointer", "-pthread"}, strip: true},
	{name: "cxx-terminate", lang: "c++", source: cxxTerminate, flags: []string{"-O2", "-fomit-frame-pointer", "-g"}, crashFunc: "shop::Cart<int>::checkout"},
	{name: "go-nil-deref", lang: "go", source: goNilDeref, crashFunc: "main.crash",
		diffs: crasherDiffs{diffInlined: true, diffSignalFrame: true, diffNullFrame: true}},
}

func buildCrasher(t *testing.T, dir string, c crasher) string {
	t.Helper()
	prog := filepath.Join(dir, c.name)
	var cmd *exec.Cmd
	switch c.lang {
	case "go":
		for name, data := range map[string]string{"main.go": c.source, "go.mod": "module crasher\n\ngo 1.26\n"} {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		cmd = exec.Command("go", "build", "-o", prog, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
	default:
		ext, cc := ".c", "gcc"
		if c.lang == "c++" {
			ext, cc = ".cc", "g++"
		}
		src := filepath.Join(dir, c.name+ext)
		if err := os.WriteFile(src, []byte(c.source), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(cc, append(append([]string{}, c.flags...), "-Wl,--build-id", "-o", prog, src)...)
	}
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd.Args[0], err, out)
	}
	if c.strip {
		if out, err := exec.Command("strip", prog).CombinedOutput(); err != nil {
			t.Fatalf("strip: %v\n%s", err, out)
		}
	}
	return prog
}

// gdbFrame is one physical frame of gdb's backtrace: gdb prints a function
// inlined at a pc as a frame of its own, without an address, before the
// function that holds the code; those lines are folded into one gdbFrame
// here, names innermost first.
type gdbFrame struct {
	pc    uint64   // 0 when gdb did not print it (an exact pc at a line start)
	names []string // "??" when gdb could not name it
}

func (g gdbFrame) physical() string { return g.names[len(g.names)-1] }

const signalFrame = "<signal handler called>"

var (
	gdbThread = regexp.MustCompile(`^Thread \d+ \(.*LWP (\d+)\)+:`)
	gdbLine   = regexp.MustCompile(`^#(\d+)\s+(?:0x([0-9a-f]+) in )?(.+?) \(`)
	gdbSignal = regexp.MustCompile(`^#(\d+)\s+<signal handler called>`)
)

// gdbBacktraces runs gdb on the core with only the binaries themselves: no
// separate debug files, no debuginfod, no auto-loaded scripts (Go's), which
// the agent does not have either.
func gdbBacktraces(t *testing.T, prog, core string) map[int32][]gdbFrame {
	t.Helper()
	cmd := exec.Command("gdb", "-nx", "-batch", "-iex", "set debug-file-directory /nonexistent",
		"-iex", "set debuginfod enabled off", "-iex", "set auto-load safe-path /nonexistent",
		"-ex", "thread apply all bt", prog, core)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	res := map[int32][]gdbFrame{}
	var tid int32 = -1
	afterSignal := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := gdbThread.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			tid, afterSignal = int32(n), false
			continue
		}
		if tid < 0 {
			continue
		}
		if gdbSignal.MatchString(line) {
			res[tid] = append(res[tid], gdbFrame{names: []string{signalFrame}})
			afterSignal = true
			continue
		}
		m := gdbLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		frames := res[tid]
		if m[2] == "" && m[1] != "0" && !afterSignal && len(frames) > 0 {
			// The caller of an inlined function, at the same pc.
			frames[len(frames)-1].names = append(frames[len(frames)-1].names, m[3])
			continue
		}
		f := gdbFrame{names: []string{m[3]}}
		if m[2] != "" {
			f.pc, _ = strconv.ParseUint(m[2], 16, 64)
		}
		res[tid] = append(frames, f)
		afterSignal = false
	}
	if len(res) == 0 {
		t.Fatalf("no backtraces in gdb's output:\n%s", out)
	}
	return res
}

// comparable reduces a function name to what gdb and the agent both print:
// no parameter list, no clone suffix.
func comparable(s string) string {
	s = strings.ReplaceAll(s, "(anonymous namespace)", "{anon}")
	if i := strings.IndexByte(s, '('); i > 0 {
		s = s[:i]
	}
	if i := strings.Index(s, " [clone"); i > 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "{anon}", "(anonymous namespace)")
}

// Documented differences from gdb. Each crasher lists the ones it must
// show: a difference that stops happening fails the test (and its entry
// goes), one that is not listed is an error.
const (
	// gdb prints each function inlined at a pc as a frame of its own, from
	// DWARF's inline records; the agent shows the function that holds the
	// code (the last of gdb's names at that pc). Go's runtime inlines much.
	diffInlined = "gdb shows inlined calls as frames of their own"
	// gdb names the frame of a signal return trampoline "<signal handler
	// called>"; the agent names the trampoline (runtime.sigreturn__sigaction,
	// __restore_rt).
	diffSignalFrame = "gdb names a signal trampoline's frame <signal handler called>"
	// gdb prints a last frame at pc 0 where Go's runtime ends a stack with a
	// zero return address; the agent stops there.
	diffNullFrame = "gdb prints a final frame at pc 0"
)

type crasherDiffs map[string]bool

func TestBacktracesMatchGDB(t *testing.T) {
	for _, c := range crashers {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			prog := buildCrasher(t, dir, c)
			if c.lang == "go" {
				t.Setenv("GOTRACEBACK", "crash")
			}
			crash, err := testcrash.Run(prog, dir, t.Logf)
			if err != nil {
				t.Fatal(err)
			}
			a := analyzeFile(t, crash.Core)
			want := gdbBacktraces(t, prog, crash.Core)
			t.Logf("crashing thread %d (%s %s):%s", a.CrashingThread, a.Outcome, a.Reason, describe(a.Stacks[0].Frames))
			compareWithGDB(t, c, a, want)
		})
	}
}

func analyzeFile(t *testing.T, path string) (an *wire.Analysis) {
	t.Helper()
	testcrash.WithFile(t, path, func(r io.ReaderAt, size int64) { an = analyze.Analyze(r, size, analyze.HostRoot{Root: "/"}) })
	return an
}

func compareWithGDB(t *testing.T, c crasher, a *wire.Analysis, want map[int32][]gdbFrame) {
	t.Helper()
	if len(a.Stacks) != len(want) {
		t.Errorf("%d threads unwound, gdb shows %d", len(a.Stacks), len(want))
	}
	if a.Outcome != coredogv1.AnalysisComplete {
		t.Errorf("outcome %s (%s), want Complete", a.Outcome, a.Reason)
	}
	seen := map[string]bool{}
	differs := func(tid int32, i int, kind string, g gdbFrame, ours coredogv1.StackFrame) {
		if !c.diffs[kind] {
			t.Errorf("thread %d frame %d: gdb %#x %q, ours %s %q (%s, not documented for %s)", tid, i, g.pc, g.names, ours.PC, ours.Function, kind, c.name)
			return
		}
		seen[kind] = true
		t.Logf("thread %d frame %d differs from gdb as documented (%s): gdb %q, ours %q", tid, i, kind, g.names, ours.Function)
	}
	for _, s := range a.Stacks {
		g, ok := want[s.TID]
		if !ok {
			t.Errorf("thread %d: not in gdb's output", s.TID)
			continue
		}
		if n := len(g); n == len(s.Frames)+1 && g[n-1].pc == 0 && g[n-1].physical() == "??" {
			differs(s.TID, n-1, diffNullFrame, g[n-1], coredogv1.StackFrame{})
			g = g[:n-1]
		}
		if len(g) != len(s.Frames) {
			t.Errorf("thread %d: %d frames, gdb shows %d:\nours %s\ngdb  %v", s.TID, len(s.Frames), len(g), describe(s.Frames), g)
		}
		for i := range min(len(g), len(s.Frames)) {
			ours := s.Frames[i]
			pc, _ := strconv.ParseUint(strings.TrimPrefix(ours.PC, "0x"), 16, 64)
			if g[i].pc != 0 && g[i].pc != pc {
				t.Errorf("thread %d frame %d: gdb pc %#x, ours %s", s.TID, i, g[i].pc, ours.PC)
			}
			switch name := g[i].physical(); {
			case name == signalFrame:
				differs(s.TID, i, diffSignalFrame, g[i], ours)
			case name == "??":
				// gdb could not name it: nothing to compare.
			case comparable(name) != comparable(ours.Function):
				t.Errorf("thread %d frame %d: gdb %#x %q, ours %s %q", s.TID, i, g[i].pc, name, ours.PC, ours.Function)
			case len(g[i].names) > 1:
				differs(s.TID, i, diffInlined, g[i], ours)
			}
		}
	}
	for kind := range c.diffs {
		if !seen[kind] {
			t.Errorf("documented difference %q no longer happens for %s: remove it", kind, c.name)
		}
	}
	if c.crashFunc != "" {
		found := false
		for _, f := range a.Stacks[0].Frames {
			found = found || f.Function == c.crashFunc
		}
		if !found {
			t.Errorf("crashing thread does not show %s: %s", c.crashFunc, describe(a.Stacks[0].Frames))
		}
	}
}

func describe(fs []coredogv1.StackFrame) string {
	var b strings.Builder
	for i, f := range fs {
		b.WriteString("\n  #" + strconv.Itoa(i) + " " + f.PC + " " + f.Module + " " + f.Function)
	}
	return b.String()
}
