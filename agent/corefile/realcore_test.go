package corefile

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/test/testcrash"
)

// These tests crash real programs and read the cores the kernel writes. The machine's
// core_pattern is never changed: with a relative pattern such as "core" the kernel
// writes into the crashing process's working directory, a fresh temporary directory
// here. When the kernel writes no core there (a pipe handler, an absolute pattern, a
// sandbox), the test runs the program under gdb and takes the core with gdb's gcore,
// and says so; it fails if neither works.

const crashC = `#include <stdio.h>
#include <unistd.h>
struct record { char pad[0x28]; int field; };
static volatile struct record *target;
int main(int argc, char **argv) {
	printf("pid=%d uid=%d gid=%d\n", (int)getpid(), (int)getuid(), (int)getgid());
	fflush(stdout);
	target->field = 42; /* NULL dereference: SIGSEGV, SEGV_MAPERR at address 0x28 */
	return 0;
}
`

// crash is a program that was made to dump core, and the core it left.
type crash struct {
	dir, prog, argv0, core string
	pid, uid, gid          int
	isGo, viaGDB           bool
}

var (
	sharedDir     string
	sharedDirOnce sync.Once
	cOnce, goOnce sync.Once
	cCrash        crash
	goCrash       crash
	cErr, goErr   error
)

// crashEnv makes the test binary crash instead of running tests: it is the Go
// program whose core TestReadCoreRealGo reads, so no toolchain run is needed.
const crashEnv = "COREDOG_TEST_CRASH_GO"

var crashTarget *int

func TestMain(m *testing.M) {
	if os.Getenv(crashEnv) == "1" {
		fmt.Printf("pid=%d\n", os.Getpid())
		*crashTarget = 42 // a Go panic; GOTRACEBACK=crash turns it into SIGABRT
	}
	code := m.Run()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	os.Exit(code)
}

// workDir is shared by the tests and fuzz seeds that need the same real core, so each
// program is built and crashed once per test binary.
func workDir(tb testing.TB) string {
	sharedDirOnce.Do(func() {
		d, err := os.MkdirTemp("", "corefile-test-")
		if err != nil {
			tb.Fatalf("temp dir: %v", err)
		}
		sharedDir = d
	})
	return sharedDir
}

// cCore builds the C program with a GNU build-id and crashes it.
func cCore(tb testing.TB) crash {
	tb.Helper()
	cOnce.Do(func() {
		dir := filepath.Join(workDir(tb), "c")
		if cErr = os.MkdirAll(dir, 0o755); cErr != nil {
			return
		}
		src := filepath.Join(dir, "crash.c")
		// A dotted name exercises the executable parsing in names and notes alike.
		prog := filepath.Join(dir, "crashy.v1")
		if cErr = os.WriteFile(src, []byte(crashC), 0o644); cErr != nil {
			return
		}
		out, err := exec.Command("gcc", "-O0", "-Wl,--build-id", "-o", prog, src).CombinedOutput()
		if err != nil {
			cErr = fmt.Errorf("gcc: %v\n%s", err, out)
			return
		}
		cCrash, cErr = crashProgram(tb, dir, prog, "./"+filepath.Base(prog), nil, "alpha", "beta")
	})
	if cErr != nil {
		tb.Fatalf("C crash: %v", cErr)
	}
	return cCrash
}

// goCore crashes the test binary itself, a Go program. Since Go 1.24 the linker writes
// a GNU build-id by default, outside the PT_NOTE segment.
func goCore(tb testing.TB) crash {
	tb.Helper()
	goOnce.Do(func() {
		dir := filepath.Join(workDir(tb), "go")
		if goErr = os.MkdirAll(dir, 0o755); goErr != nil {
			return
		}
		var prog string
		if prog, goErr = os.Executable(); goErr != nil {
			return
		}
		goCrash, goErr = crashProgram(tb, dir, prog, prog, []string{"GOTRACEBACK=crash", crashEnv + "=1"})
	})
	if goErr != nil {
		tb.Fatalf("Go crash: %v", goErr)
	}
	return goCrash
}

var (
	pidLine = regexp.MustCompile(`pid=(\d+)`)
	idsLine = regexp.MustCompile(`uid=(\d+) gid=(\d+)`)
)

// nobody is the identity the C program runs as when the tests run as root, so the
// uid and gid in the core are not zeros that any misread would also produce.
const nobody = 65534

// crashProgram runs prog (as argv0, from dir) with RLIMIT_CORE raised and returns the
// core the kernel wrote, or, failing that, one taken by gdb.
func crashProgram(tb testing.TB, dir, prog, argv0 string, env []string, args ...string) (crash, error) {
	c := crash{dir: dir, prog: prog, argv0: argv0, isGo: slices.Contains(env, "GOTRACEBACK=crash")}
	if os.Getenv("COREDOG_TEST_FORCE_GCORE") == "" {
		// exec keeps the PID, so the shell's PID is the crashing process's.
		script := `ulimit -c unlimited 2>/dev/null || ulimit -S -c "$(ulimit -H -c)"; exec "$0" "$@"`
		cmd := exec.Command("sh", append([]string{"-c", script, argv0}, args...)...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		if os.Getuid() == 0 && !c.isGo {
			// The kernel writes the core as the crashing process, so it needs the
			// directory to be writable; exec of a plain binary keeps it dumpable.
			if err := os.Chmod(filepath.Dir(dir), 0o755); err != nil {
				return c, err
			}
			if err := os.Chmod(dir, 0o777); err != nil {
				return c, err
			}
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if cmd.ProcessState == nil {
			return c, fmt.Errorf("starting %s: %v", prog, err)
		}
		ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if err == nil || !ws.Signaled() {
			return c, fmt.Errorf("program did not die from a signal: %v\n%s", err, out.Bytes())
		}
		c.pid = cmd.Process.Pid
		c.uid, c.gid = parseIDs(out.Bytes())
		// The kernel finishes writing before the parent can reap, but a slow file
		// system is allowed a moment.
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			for _, name := range []string{"core", "core." + strconv.Itoa(c.pid)} {
				if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Size() > 0 {
					c.core = filepath.Join(dir, name)
					return c, nil
				}
			}
			if time.Now().After(deadline) || !ws.CoreDump() {
				break
			}
		}
		pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
		tb.Logf("kernel wrote no core in %s (core_pattern %q, core dumped: %v); falling back to gdb's gcore", dir, bytes.TrimSpace(pattern), ws.CoreDump())
	}
	return crashUnderGDB(tb, c, env, args...)
}

// crashUnderGDB runs the program under gdb, which stops it at the fatal signal, and
// writes the core with gcore; the notes then describe the same stopped crash.
func crashUnderGDB(tb testing.TB, c crash, env []string, args ...string) (crash, error) {
	c.viaGDB = true
	c.core = filepath.Join(c.dir, "core.gdb")
	gdbArgs := []string{"-nx", "-batch", "-ex", "run", "-ex", "gcore " + c.core, "-ex", "kill", "--args", c.argv0}
	cmd := exec.Command("gdb", append(gdbArgs, args...)...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), env...)
	if c.isGo {
		// gdb would stop at the Go runtime's own SIGSEGV and SIGURG first.
		cmd.Args = append(cmd.Args[:1], append([]string{"-ex", "handle SIGSEGV nostop noprint pass", "-ex", "handle SIGURG nostop noprint pass", "-ex", "handle SIGQUIT nostop noprint pass"}, cmd.Args[1:]...)...)
	}
	out, err := cmd.CombinedOutput()
	m := pidLine.FindSubmatch(out)
	if m == nil {
		return c, fmt.Errorf("gdb: no pid in output (%v):\n%s", err, out)
	}
	c.pid, _ = strconv.Atoi(string(m[1]))
	c.uid, c.gid = parseIDs(out)
	if st, serr := os.Stat(c.core); serr != nil || st.Size() == 0 {
		return c, fmt.Errorf("gdb wrote no core (%v):\n%s", err, out)
	}
	tb.Logf("core taken by gdb's gcore for pid %d", c.pid)
	return c, nil
}

// parseIDs reads the uid and gid the program printed; -1 when it printed none.
func parseIDs(out []byte) (uid, gid int) {
	m := idsLine.FindSubmatch(out)
	if m == nil {
		return -1, -1
	}
	uid, _ = strconv.Atoi(string(m[1]))
	gid, _ = strconv.Atoi(string(m[2]))
	return uid, gid
}

// gnuBuildID reads the build-id of an ELF file on disk with debug/elf, independently of
// the code under test.
func gnuBuildID(t *testing.T, path string) string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		d, err := s.Data()
		if err != nil {
			t.Fatalf("section %s: %v", s.Name, err)
		}
		for len(d) >= 12 {
			namesz, descsz, typ := le.Uint32(d), le.Uint32(d[4:]), le.Uint32(d[8:])
			name := d[12 : 12+namesz]
			desc := d[12+alignUp(uint64(namesz), 4):]
			if typ == ntGNUBuildID && string(bytes.TrimRight(name, "\x00")) == "GNU" {
				return fmt.Sprintf("%x", desc[:descsz])
			}
			d = desc[alignUp(uint64(descsz), 4):]
		}
	}
	t.Fatalf("%s has no GNU build-id", path)
	return ""
}

func readCoreFile(t *testing.T, path string) (c *Core, err error) {
	t.Helper()
	testcrash.WithFile(t, path, func(r io.ReaderAt, size int64) { c, err = ReadCore(r, size) })
	return c, err
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReadCoreRealC(t *testing.T) {
	cr := cCore(t)
	data, err := os.ReadFile(cr.core)
	if err != nil {
		t.Fatal(err)
	}
	state, err := readCore(bytes.NewReader(data), int64(len(data)), 0)
	if err != nil {
		t.Fatalf("ReadCore: %v", err)
	}
	c := state.c
	if state.fname != "crashy.v1" {
		t.Errorf("pr_fname = %q, want the comm %q", state.fname, "crashy.v1")
	}
	wantBuildID := gnuBuildID(t, cr.prog)
	checks := []struct {
		name      string
		got, want any
	}{
		{"Machine", c.Machine, "x86_64"},
		{"Signal", c.Signal, 11},
		{"SignalCode (SEGV_MAPERR)", c.SignalCode, 1},
		{"HasFaultAddress", c.HasFaultAddress, true},
		{"FaultAddress", c.FaultAddress, uint64(0x28)},
		{"PID", c.PID, int64(cr.pid)},
		{"TID", c.TID, int64(cr.pid)},
		{"Threads", c.Threads, 1},
		{"Executable", c.Executable, "crashy.v1"},
		{"ExecutablePath", realPath(t, c.ExecutablePath), realPath(t, cr.prog)},
		{"UID", *c.UID, int64(cr.uid)},
		{"GID", *c.GID, int64(cr.gid)},
		{"CrashModule", c.CrashModule, "crashy.v1"},
		{"BuildID", c.BuildID, wantBuildID},
		{"Truncated", c.Truncated, false},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.PC == 0 || c.CrashOffset == 0 || c.CrashOffset > 1<<20 {
		t.Errorf("PC %#x, CrashOffset %#x: want the faulting instruction inside the program", c.PC, c.CrashOffset)
	}
	checkOffsetIsInMain(t, cr.prog, c.CrashOffset)
	t.Logf("C core: pid %d uid %d gid %d, fault %#x, %s+%#x, build-id %s", c.PID, *c.UID, *c.GID, c.FaultAddress, c.CrashModule, c.CrashOffset, c.BuildID)
	if len(c.Mappings) < 3 {
		t.Errorf("Mappings = %v, want the program and libc at least", c.Mappings)
	}
	if !cr.viaGDB && c.CommandLine != "./crashy.v1 alpha beta" {
		// Under gdb the program is started through a shell with its full path.
		t.Errorf("CommandLine = %q, want %q", c.CommandLine, "./crashy.v1 alpha beta")
	}
}

// checkOffsetIsInMain confirms CrashOffset with debug/elf: the file offset must fall in
// the executable's .text, inside the symbol main.
func checkOffsetIsInMain(t *testing.T, prog string, off uint64) {
	t.Helper()
	f, err := elf.Open(prog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var vaddr uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && off >= p.Off && off < p.Off+p.Filesz {
			vaddr = p.Vaddr + (off - p.Off)
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == "main" && vaddr >= s.Value && vaddr < s.Value+s.Size {
			return
		}
	}
	t.Errorf("CrashOffset %#x (vaddr %#x) is not inside main", off, vaddr)
}

func TestReadCoreRealGo(t *testing.T) {
	cr := goCore(t)
	c, err := readCoreFile(t, cr.core)
	if err != nil {
		t.Fatalf("ReadCore: %v", err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Machine", c.Machine, "x86_64"},
		{"Signal", c.Signal, 6}, // the runtime re-raises SIGABRT after printing the panic
		{"HasFaultAddress", c.HasFaultAddress, false},
		{"PID", c.PID, int64(cr.pid)},
		{"Executable", c.Executable, filepath.Base(cr.prog)},
		{"CrashModule", c.CrashModule, filepath.Base(cr.prog)},
		{"BuildID", c.BuildID, gnuBuildID(t, cr.prog)},
		{"Truncated", c.Truncated, false},
	}
	if !cr.viaGDB {
		// tgkill(2) from runtime.raise; gdb reports its own stop instead.
		checks = append(checks, struct {
			name      string
			got, want any
		}{"SignalCode (SI_TKILL)", c.SignalCode, -6})
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
	if c.TID <= 0 {
		t.Errorf("TID = %d", c.TID)
	}
	if c.Threads < 2 {
		t.Errorf("Threads = %d, want the Go runtime's several threads", c.Threads)
	}
	t.Logf("Go core: pid %d, crashing thread %d of %d, PC %#x, offset %#x, build-id %s", c.PID, c.TID, c.Threads, c.PC, c.CrashOffset, c.BuildID)
}

func TestReadCoreTruncatedReal(t *testing.T) {
	cr := cCore(t)
	full, err := os.ReadFile(cr.core)
	if err != nil {
		t.Fatal(err)
	}
	want, err := ReadCore(bytes.NewReader(full), int64(len(full)))
	if err != nil {
		t.Fatal(err)
	}
	noteStart, noteEnd, loadsAfter := noteSegment(t, full)
	type truncCase struct {
		name         string
		cut          int
		wantErr      error
		wantSignal   int
		wantMappings bool
	}
	tests := []truncCase{
		{"inside the notes", int(noteEnd) - 100, ErrCorrupt, 11, true},
		{"inside the first note", int(noteStart) + 40, ErrCorrupt, 0, false},
		{"inside the program headers", 100, ErrCorrupt, 0, false},
	}
	if loadsAfter {
		// The kernel writes the notes first, so a core cut anywhere after them (RLIMIT_CORE,
		// a full disk) still has everything but memory; gdb writes them last.
		tests = append(tests,
			truncCase{"just after the notes", int(noteEnd), nil, 11, true},
			truncCase{"half or after the notes", max(int(noteEnd), len(full)/2), nil, 11, true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cut := full[:tt.cut]
			c, err := ReadCore(bytes.NewReader(cut), int64(len(cut)))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if c == nil {
				t.Fatal("nil Core")
			}
			if !c.Truncated {
				t.Error("Truncated = false")
			}
			if c.Signal != tt.wantSignal {
				t.Errorf("Signal = %d, want %d", c.Signal, tt.wantSignal)
			}
			if got := len(c.Mappings) > 0; got != tt.wantMappings {
				t.Errorf("have mappings = %v, want %v", got, tt.wantMappings)
			}
			if tt.wantMappings && (c.CrashModule != want.CrashModule || c.CrashOffset != want.CrashOffset || c.Executable != want.Executable) {
				t.Errorf("got module %q+%#x exe %q, want %q+%#x exe %q", c.CrashModule, c.CrashOffset, c.Executable, want.CrashModule, want.CrashOffset, want.Executable)
			}
		})
	}
}

// noteSegment finds the core's PT_NOTE extent using debug/elf, and whether PT_LOAD data
// follows it (the kernel's layout) or not (gdb's).
func noteSegment(t *testing.T, core []byte) (start, end uint64, loadsAfter bool) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(core))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_NOTE {
			start, end = p.Off, p.Off+p.Filesz
		}
	}
	if end == 0 {
		t.Fatal("no PT_NOTE")
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Filesz > 0 && p.Off >= end {
			loadsAfter = true
		}
	}
	return start, end, loadsAfter
}
