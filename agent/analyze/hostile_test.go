package analyze_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coredog/coredog/agent/analyze"
	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
	"github.com/coredog/coredog/test/testcrash"
)

const stackTop = 0x7ffd_0000_0000

func analyzeBytes(t testing.TB, core []byte, o analyze.Opener) *wire.Analysis {
	t.Helper()
	return analyze.Analyze(bytes.NewReader(core), int64(len(core)), o)
}

// TestHostileCores: cores written to mislead the unwinder end in bounded
// time with Partial and a reason, never a crash or an endless walk.
func TestHostileCores(t *testing.T) {
	// A stack of return addresses to itself: every frame is "frameless",
	// each step moves 8 bytes up, until the frame bound.
	selfLoop := make([]uint64, 512)
	for i := range selfLoop {
		selfLoop[i] = 0x1000
	}
	// arm64 frame records that point at themselves: fp → [fp] = fp.
	fpLoop := words(stackTop+0x100, 0x2000)
	fpLoopStack := append(make([]byte, 0x100), fpLoop...)
	cases := []struct {
		name   string
		core   []byte
		reason string
	}{
		{"x86-64 stack that loops", synthCore(elf.EM_X86_64,
			[]synthThread{{tid: 1, regs: amd64Regs(0x1000, stackTop, 0)}},
			[]synthSeg{{stackTop, words(selfLoop...)}}, progAt(0x1000)), "more than 64 frames"},
		{"arm64 frame pointer to itself", synthCore(elf.EM_AARCH64,
			[]synthThread{{tid: 1, regs: arm64Regs(0x2000, stackTop, stackTop+0x100, 0x2000)}},
			[]synthSeg{{stackTop, fpLoopStack}}, progAt(0x2000)), "does not go outwards"},
		{"stack outside the core", synthCore(elf.EM_X86_64,
			[]synthThread{{tid: 1, regs: amd64Regs(0x1000, 0xdead_0000, 0)}}, nil, nil), "not in the core"},
		{"forged NT_PRSTATUS", synthCore(elf.EM_X86_64,
			[]synthThread{{tid: 1, regs: amd64Regs(0x1000, stackTop, 0), prstatusSize: 40}}, nil, nil), "NT_PRSTATUS of 40 bytes"},
		{"mapping whose file cannot be opened", synthCore(elf.EM_X86_64,
			[]synthThread{{tid: 1, regs: amd64Regs(0x400100, stackTop, 0)}},
			[]synthSeg{{stackTop, words(0)}}, []synthMapping{{0x400000, 0x401000, 0, "/nonexistent/prog"}}), "prog: the core holds no build-id for it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			a := analyzeBytes(t, tc.core, noModules{})
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("took %s", d)
			}
			if a.Outcome != coredogv1.AnalysisPartial || !strings.Contains(a.Reason, tc.reason) {
				t.Errorf("outcome %s, reason %q; want Partial with %q", a.Outcome, a.Reason, tc.reason)
			}
			for _, s := range a.Stacks {
				if len(s.Frames) > wire.MaxThreadFrames {
					t.Errorf("%d frames", len(s.Frames))
				}
			}
		})
	}
}

// progAt maps a program nobody can open over the page holding pc.
func progAt(pc uint64) []synthMapping {
	return []synthMapping{{pc &^ 0xfff, pc&^0xfff + 0x1000, 0, "/nonexistent/prog"}}
}

// TestTenThousandThreads: a core with 10,000 threads costs bounded time and
// memory: wire.MaxAnalysisThreads are unwound and the reason says so.
func TestTenThousandThreads(t *testing.T) {
	threads := make([]synthThread, 10000)
	for i := range threads {
		threads[i] = synthThread{tid: int32(100 + i), regs: amd64Regs(0x1000, stackTop, 0)}
	}
	loop := make([]uint64, 512)
	for i := range loop {
		loop[i] = 0x1000
	}
	core := synthCore(elf.EM_X86_64, threads, []synthSeg{{stackTop, words(loop...)}}, progAt(0x1000))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	a := analyzeBytes(t, core, noModules{})
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	if elapsed > 5*time.Second {
		t.Errorf("took %s", elapsed)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("allocated %d MiB", alloc>>20)
	}
	if a.Outcome != coredogv1.AnalysisPartial || !strings.Contains(a.Reason, "256 of 10000 threads unwound") || a.Threads != 10000 {
		t.Errorf("outcome %s threads %d reason %q", a.Outcome, a.Threads, a.Reason)
	}
	if len(a.Stacks) != wire.MaxAnalysisThreads {
		t.Errorf("%d stacks", len(a.Stacks))
	}
	t.Logf("10,000 threads: %s, %d stacks", elapsed, len(a.Stacks))
}

// TestModulesAreOpenedOnlyInTheirRoot: a container's mapping that names a
// host file through an absolute symbolic link, or through "..", resolves
// inside the container's root, and a file whose build-id is not the core's
// is not used.
func TestModulesAreOpenedOnlyInTheirRoot(t *testing.T) {
	root := t.TempDir()
	outside := t.TempDir()
	secret := filepath.Join(outside, "secret")
	if err := os.WriteFile(secret, []byte("host file"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(root, "lib", "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "lib", "dir")); err != nil {
		t.Fatal(err)
	}
	h := analyze.HostRoot{Root: root}
	for _, p := range []string{"/lib/abs", "/lib/dir/secret", "/../../../../" + secret, "/lib/../../" + strings.TrimPrefix(secret, "/")} {
		if m, err := h.Open(analyze.ModuleRef{Path: p, BuildID: "00"}); err == nil {
			m.Close()
			t.Errorf("%s: opened a file outside the root", p)
		}
	}
	if _, err := h.Open(analyze.ModuleRef{Path: "/lib/x (deleted)"}); err == nil {
		t.Error("opened a deleted mapping's path")
	}
}

// TestCFIThatPointsOutsideTheCore: a real core whose crashing thread's stack
// pointer was changed to memory the core does not hold: the real CFI of the
// real C library says where the return address is, and it is not there.
func TestCFIThatPointsOutsideTheCore(t *testing.T) {
	dir := t.TempDir()
	prog := buildCrasher(t, dir, crashers[0])
	crash, err := testcrash.Run(prog, dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	core, err := os.ReadFile(crash.Core)
	if err != nil {
		t.Fatal(err)
	}
	p, err := corefile.ReadProcess(bytes.NewReader(core), int64(len(core)), 1)
	if err != nil || len(p.ThreadNotes) == 0 {
		t.Fatalf("reading the core: %v", err)
	}
	const rspIndex = 19
	binary.LittleEndian.PutUint64(core[p.ThreadNotes[0].Offset+112+8*rspIndex:], 0xdead_0000)
	a := analyzeBytes(t, core, analyze.HostRoot{Root: "/"})
	if a.Outcome != coredogv1.AnalysisPartial || !strings.Contains(a.Reason, "the return address is not saved where the CFI says") {
		t.Errorf("outcome %s, reason %q", a.Outcome, a.Reason)
	}
	if n := len(a.Stacks[0].Frames); n != 1 || a.Stacks[0].Frames[0].Module != "libc.so.6" {
		t.Errorf("crashing thread: %s", describe(a.Stacks[0].Frames))
	}
}
