package app_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	. "github.com/onsi/gomega"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/corepattern"
	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/agent/receive"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/test/attacker"
	"github.com/coredog/coredog/test/testcrash"
)

// TestPipeModeReceivesCoresFromTheKernel runs the agent in corePattern Pipe
// with a real agent binary as the receiver, then does what the kernel does
// with a pipe pattern: runs the command it names, with the specifiers
// expanded and the core on stdin. The core must become a CoreDump attributed
// by the container ID the receiver read while the process existed.
func TestPipeModeReceivesCoresFromTheKernel(t *testing.T) {
	g := NewWithT(t)
	bin := agentBinary(t)
	sysctl := filepath.Join(t.TempDir(), "core_pattern")
	must(t, os.WriteFile(sysctl, []byte("core\n"), 0o644))
	// core_pipe_limit is found beside core_pattern.
	pipeLimit := filepath.Join(filepath.Dir(sysctl), "core_pipe_limit")
	must(t, os.WriteFile(pipeLimit, []byte("0\n"), 0o644))
	h := newHarness(t, func(c *app.Config) {
		c.CorePattern, c.SysctlPath, c.ReceiverBinary = "Pipe", sysctl, bin
	})
	const pid = "5151"
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	must(t, os.MkdirAll(filepath.Join(h.proc, pid), 0o755))
	must(t, os.WriteFile(filepath.Join(h.proc, pid, "cgroup"), []byte("0::/system.slice/docker-"+id+".scope\n"), 0o644))
	h.start()

	pattern := waitForSysctl(g, sysctl, receive.CorePattern(h.dir))
	// core_pipe_limit is set before core_pattern.
	b, err := os.ReadFile(pipeLimit)
	must(t, err)
	g.Expect(string(b)).To(Equal(strconv.Itoa(corepattern.PipeLimit)), "core_pipe_limit while the agent runs")

	// The kernel splits the command, expands each specifier, and runs it.
	c, err := testcrash.Run(crasher, t.TempDir(), t.Logf)
	must(t, err)
	core, err := os.ReadFile(c.Core)
	must(t, err)
	values := map[string]string{"%P": pid, "%p": "1", "%I": pid, "%i": "1", "%s": "11", "%t": "1767225600",
		"%u": "0", "%g": "0", "%d": "2", "%h": "api-7f9c", "%e": "crashy"}
	receiveAsTheKernel(t, pattern, values, core)
	// The process goes away once the kernel is done with the receiver.
	must(t, os.RemoveAll(filepath.Join(h.proc, pid)))

	name := "core.api-7f9c.crashy." + pid + ".11.1767225600"
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, name)
		g.Expect(cd.Spec.ContainerID).To(Equal("docker://" + id))
		g.Expect(cd.Spec.Size).To(Equal(int64(len(core))))
		g.Expect(cd.Spec.Process.Hostname).To(Equal("api-7f9c"))
		g.Expect(cd.Spec.Process.Signal).To(Equal(int32(11)))
		g.Expect(cd.Spec.ELF).NotTo(BeNil())
		// %d 2: fs.suid_dumpable=2 dumped a privileged process.
		g.Expect(cd.Spec.Process.DumpMode).To(Equal(coredogv1.DumpModePrivileged))
	}, wait, 100*time.Millisecond).Should(Succeed())

	h.stop()
	b, err = os.ReadFile(sysctl)
	must(t, err)
	g.Expect(strings.TrimSpace(string(b))).To(Equal("core"))
	b, err = os.ReadFile(pipeLimit)
	must(t, err)
	g.Expect(strings.TrimSpace(string(b))).To(Equal("0"), "core_pipe_limit restored")
	// A clean exit takes the receiver away with the pattern.
	_, err = os.Stat(filepath.Join(h.dir, receive.InstallDir, receive.BinaryName))
	g.Expect(os.IsNotExist(err)).To(BeTrue(), "the receiver must be gone: %v", err)
}

var (
	agentBinOnce sync.Once
	agentBinPath string
	agentBinErr  error
)

// agentBinary builds the agent once for the package's tests that run it as
// the kernel's pipe receiver, with the flags of `make build`, so that under
// `make test` this is a cache hit.
func agentBinary(t *testing.T) string {
	t.Helper()
	agentBinOnce.Do(func() {
		dir, err := os.MkdirTemp("", "coredog-agent-bin-")
		if err != nil {
			agentBinErr = err
			return
		}
		agentBinPath = filepath.Join(dir, "agent")
		build := exec.Command("go", "build", "-trimpath", "-o", agentBinPath, "github.com/coredog/coredog/cmd/agent")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			agentBinErr = fmt.Errorf("building the agent: %v\n%s", err, out)
		}
	})
	if agentBinErr != nil {
		t.Fatal(agentBinErr)
	}
	return agentBinPath
}

// receiveAsTheKernel does what the kernel does with a pipe pattern: splits
// the command, expands each specifier from values, and runs it with the
// core on stdin.
func receiveAsTheKernel(t *testing.T, pattern string, values map[string]string, core []byte) {
	t.Helper()
	fields := strings.Fields(strings.TrimPrefix(pattern, "|"))
	args := make([]string, 0, len(fields)-1)
	for _, f := range fields[1:] {
		if v, ok := values[f]; ok {
			f = v
		}
		args = append(args, f)
	}
	kernel := exec.Command(fields[0], args...)
	kernel.Stdin = bytes.NewReader(core)
	if out, err := kernel.CombinedOutput(); err != nil {
		t.Fatalf("the receiver failed: %v\n%s", err, out)
	}
}

// TestAgentRefusesAReceiverDirectoryAnotherUserMade is the attack of an
// unprivileged process (uid 1000) on a node whose core directory is
// world-writable (1777): before the agent starts it makes
// <hostPath>/.coredog and plants core_pattern.original piping to its own
// program, so that the agent would install the receiver where it can replace
// it, and on exit "restore" a core_pattern that runs its program as root.
// The agent must refuse to start in Manage and Pipe alike, saying why, and
// leave core_pattern alone.
func TestAgentRefusesAReceiverDirectoryAnotherUserMade(t *testing.T) {
	for _, mode := range []string{"Manage", "Pipe"} {
		t.Run(mode, func(t *testing.T) {
			sysctl := filepath.Join(t.TempDir(), "core_pattern")
			must(t, os.WriteFile(filepath.Join(filepath.Dir(sysctl), "core_pipe_limit"), []byte("0\n"), 0o644))
			h := newHarness(t, func(c *app.Config) {
				c.CorePattern, c.SysctlPath, c.ReceiverBinary = mode, sysctl, "/bin/true"
			})
			// An agent before this one was killed and left its pattern.
			ours := h.dir + "/" + h.cfg.FileNamePattern
			if mode == "Pipe" {
				ours = receive.CorePattern(h.dir)
			}
			must(t, os.WriteFile(sysctl, []byte(ours+"\n"), 0o644))
			for p := h.dir; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
				must(t, os.Chmod(p, 0o755))
			}
			must(t, os.Chmod(h.dir, os.ModeSticky|0o777))
			evil := filepath.Join(h.dir, "evil")
			attacker.Run(t, fmt.Sprintf(`mkdir -m 0777 %[1]s/.coredog
printf '#!/bin/sh\nid > %[1]s/pwned\n' > %[2]s; chmod 0755 %[2]s
printf '|%[2]s %%%%P' > %[1]s/.coredog/core_pattern.original`, h.dir, evil))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- app.Run(ctx, h.cfg, restCfg, scheme.New(), testr.New(t)) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				// The old agent started; stopping it "restores" the planted value.
				cancel()
				<-done
				b, _ := os.ReadFile(sysctl)
				t.Fatalf("the agent started in a directory uid 1000 made; core_pattern after it stopped: %q", b)
			}
			if err == nil || !errors.Is(err, hostdir.ErrUnsafe) || !strings.Contains(err.Error(), "refusing to set core_pattern") {
				t.Fatalf("Run = %v, want a refusal naming the unsafe directory", err)
			}
			t.Logf("the agent said: %v", err)
			if b, _ := os.ReadFile(sysctl); string(b) != ours+"\n" {
				t.Fatalf("core_pattern = %q, want it untouched", b)
			}
			if _, err := os.Lstat(filepath.Join(h.dir, receive.InstallDir, receive.BinaryName)); !os.IsNotExist(err) {
				t.Fatalf("a receiver was installed: %v", err)
			}
		})
	}
}

// waitForSysctl waits until the (test's stand-in) sysctl file holds want,
// and returns it.
func waitForSysctl(g Gomega, sysctl, want string) string {
	g.Eventually(func() string {
		b, _ := os.ReadFile(sysctl)
		return strings.TrimSpace(string(b))
	}, wait, 50*time.Millisecond).Should(Equal(want))
	return want
}
