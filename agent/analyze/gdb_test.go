package analyze_test

import (
	"bufio"
	"bytes"
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

// crasher describes one program of the oracle test.
type crasher struct {
	name   string
	lang   string // "c", "c++"
	source string
	flags  []string
	strip  bool
	// crashFunc is a function the crashing thread must show.
	crashFunc string
}

var crashers = []crasher{
	{name: "c-thread-strlen", lang: "c", source: cThreadStrlen, flags: []string{"-O2", "-fomit-frame-pointer", "-g", "-pthread"}, crashFunc: "level3"},
	{name: "c-thread-strlen-stripped", lang: "c", source: cThreadStrlen, flags: []string{"-O2", "-fomit-frame-pointer", "-pthread"}, strip: true},
	{name: "cxx-terminate", lang: "c++", source: cxxTerminate, flags: []string{"-O2", "-fomit-frame-pointer", "-g"}, crashFunc: "shop::Cart<int>::checkout"},
}

func buildCrasher(t *testing.T, dir string, c crasher) string {
	t.Helper()
	ext, cc := ".c", "gcc"
	if c.lang == "c++" {
		ext, cc = ".cc", "g++"
	}
	src := filepath.Join(dir, c.name+ext)
	prog := filepath.Join(dir, c.name)
	if err := os.WriteFile(src, []byte(c.source), 0o600); err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, c.flags...), "-Wl,--build-id", "-o", prog, src)
	if out, err := exec.Command(cc, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cc, err, out)
	}
	if c.strip {
		if out, err := exec.Command("strip", prog).CombinedOutput(); err != nil {
			t.Fatalf("strip: %v\n%s", err, out)
		}
	}
	return prog
}

// gdbFrame is one line of gdb's backtrace.
type gdbFrame struct {
	pc       uint64 // 0 when gdb did not print it (frame 0 at a line start)
	function string // "??" when gdb could not name it
}

var (
	gdbThread = regexp.MustCompile(`^Thread \d+ \(.*LWP (\d+)\)\):`)
	gdbLine   = regexp.MustCompile(`^#(\d+)\s+(?:0x([0-9a-f]+) in )?(.+?) \(`)
)

// gdbBacktraces runs gdb on the core with only the binaries themselves: no
// separate debug files, no debuginfod, which the agent does not have either.
func gdbBacktraces(t *testing.T, prog, core string) map[int32][]gdbFrame {
	t.Helper()
	cmd := exec.Command("gdb", "-nx", "-batch", "-iex", "set debug-file-directory /nonexistent",
		"-iex", "set debuginfod enabled off", "-ex", "set print demangle on",
		"-ex", "thread apply all bt", prog, core)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("gdb: %v\n%s", err, out)
	}
	res := map[int32][]gdbFrame{}
	var tid int32 = -1
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if m := gdbThread.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			tid = int32(n)
			continue
		}
		if tid < 0 {
			continue
		}
		if m := gdbLine.FindStringSubmatch(line); m != nil {
			f := gdbFrame{function: m[3]}
			if m[2] != "" {
				f.pc, _ = strconv.ParseUint(m[2], 16, 64)
			}
			res[tid] = append(res[tid], f)
		}
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

// exception is a documented difference from gdb that the test checks still
// happens: when it stops happening the test fails, and the entry goes.
type exception struct {
	crasher string
	why     string
	// applies says whether the difference at this frame is the documented
	// one.
	applies func(gdb gdbFrame, ours coredogv1.StackFrame) bool
}

var exceptions = []exception{}

func TestBacktracesMatchGDB(t *testing.T) {
	for _, c := range crashers {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			prog := buildCrasher(t, dir, c)
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

func analyzeFile(t *testing.T, path string) *wire.Analysis {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return analyze.Analyze(f, st.Size(), analyze.HostRoot{Root: "/"})
}

func compareWithGDB(t *testing.T, c crasher, a *wire.Analysis, want map[int32][]gdbFrame) {
	t.Helper()
	if len(a.Stacks) != len(want) {
		t.Errorf("%d threads unwound, gdb shows %d", len(a.Stacks), len(want))
	}
	if a.Outcome != coredogv1.AnalysisComplete {
		t.Errorf("outcome %s (%s), want Complete", a.Outcome, a.Reason)
	}
	used := map[int]bool{}
	for _, s := range a.Stacks {
		g, ok := want[s.TID]
		if !ok {
			t.Errorf("thread %d: not in gdb's output", s.TID)
			continue
		}
		if len(g) != len(s.Frames) {
			t.Errorf("thread %d: %d frames, gdb shows %d:\nours %s\ngdb  %v", s.TID, len(s.Frames), len(g), describe(s.Frames), g)
		}
		for i := range min(len(g), len(s.Frames)) {
			ours := s.Frames[i]
			pc, _ := strconv.ParseUint(strings.TrimPrefix(ours.PC, "0x"), 16, 64)
			pcOK := g[i].pc == 0 || g[i].pc == pc
			nameOK := g[i].function == "??" || comparable(g[i].function) == comparable(ours.Function)
			if pcOK && nameOK {
				continue
			}
			documented := false
			for j, e := range exceptions {
				if e.crasher == c.name && e.applies(g[i], ours) {
					used[j], documented = true, true
					t.Logf("thread %d frame %d differs from gdb as documented (%s): gdb %#x %q, ours %s %q", s.TID, i, e.why, g[i].pc, g[i].function, ours.PC, ours.Function)
				}
			}
			if !documented {
				t.Errorf("thread %d frame %d: gdb %#x %q, ours %s %q", s.TID, i, g[i].pc, g[i].function, ours.PC, ours.Function)
			}
		}
	}
	for j, e := range exceptions {
		if e.crasher == c.name && !used[j] {
			t.Errorf("documented difference %q no longer happens: remove it", e.why)
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
