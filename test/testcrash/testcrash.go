// Package testcrash makes real kernel-written core dumps for tests and the
// demo: it builds a small C program that dereferences NULL, runs it with
// RLIMIT_CORE raised in a directory of the caller's, and returns the core the
// kernel wrote there (the machines CoreDog is tested on have core_pattern
// "core"). Where the kernel writes no core into the working directory (a pipe
// handler, an absolute pattern), it takes the core with gdb's gcore instead
// and says so. It never touches /proc/sys/kernel/core_pattern.
package testcrash

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"
)

const source = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static volatile int *target;
int main(int argc, char **argv) {
	/* --touch=N: write N MiB of heap first, so that the core is that large. */
	if (argc > 1 && strncmp(argv[1], "--touch=", 8) == 0) {
		size_t n = (size_t)atol(argv[1] + 8) << 20;
		char *p = malloc(n);
		for (size_t i = 0; p && i < n; i += 4096) p[i] = (char)(i >> 12);
	}
	printf("pid=%d\n", (int)getpid());
	fflush(stdout);
	*target = 42; /* SIGSEGV at address 0 */
	return 0;
}
`

// Crash is a program that dumped core, and its core.
type Crash struct {
	// Dir is where the program ran and the core is.
	Dir string
	// Program is the crashing executable.
	Program string
	// Core is the core file.
	Core string
	// PID is the crashed process's PID.
	PID int
	// ViaGDB is true when gdb's gcore wrote the core.
	ViaGDB bool
}

// Build compiles the crashing program into dir as name.
func Build(dir, name string) (string, error) {
	src := filepath.Join(dir, name+".c")
	prog := filepath.Join(dir, name)
	if err := os.WriteFile(src, []byte(source), 0o600); err != nil {
		return "", err
	}
	out, err := exec.Command("gcc", "-O0", "-g", "-Wl,--build-id", "-o", prog, src).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("gcc (needed to build the crashing program): %v\n%s", err, out)
	}
	return prog, nil
}

// Run runs prog in dir with RLIMIT_CORE raised until it crashes and returns
// its core. logf reports a fallback to gcore.
func Run(prog, dir string, logf func(string, ...any), args ...string) (Crash, error) {
	c := Crash{Dir: dir, Program: prog}
	// exec keeps the PID, so the shell's PID is the crashing process's.
	script := `ulimit -c unlimited 2>/dev/null || ulimit -S -c "$(ulimit -H -c)"; exec "$0" "$@"`
	cmd := exec.Command("sh", append([]string{"-c", script, prog}, args...)...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() {
		return c, fmt.Errorf("program did not die from a signal: %v\n%s", err, out.Bytes())
	}
	c.PID = cmd.Process.Pid
	for deadline := time.Now().Add(2 * time.Second); ws.CoreDump(); time.Sleep(20 * time.Millisecond) {
		for _, name := range []string{"core", "core." + strconv.Itoa(c.PID)} {
			if st, err := os.Stat(filepath.Join(dir, name)); err == nil && st.Size() > 0 {
				c.Core = filepath.Join(dir, name)
				return c, nil
			}
		}
		if time.Now().After(deadline) {
			break
		}
	}
	pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	logf("kernel wrote no core in %s (core_pattern %q); taking one with gdb's gcore", dir, bytes.TrimSpace(pattern))
	return runUnderGDB(c, args...)
}

var pidLine = regexp.MustCompile(`pid=(\d+)`)

func runUnderGDB(c Crash, args ...string) (Crash, error) {
	c.ViaGDB = true
	c.Core = filepath.Join(c.Dir, "core.gdb")
	gdbArgs := append([]string{"-nx", "-batch", "-ex", "run", "-ex", "gcore " + c.Core, "-ex", "kill", "--args", c.Program}, args...)
	cmd := exec.Command("gdb", gdbArgs...)
	cmd.Dir = c.Dir
	out, err := cmd.CombinedOutput()
	m := pidLine.FindSubmatch(out)
	if m == nil {
		return c, fmt.Errorf("gdb: no pid in output (%v):\n%s", err, out)
	}
	c.PID, _ = strconv.Atoi(string(m[1]))
	if st, serr := os.Stat(c.Core); serr != nil || st.Size() == 0 {
		return c, fmt.Errorf("gdb wrote no core (%v):\n%s", err, out)
	}
	return c, nil
}
