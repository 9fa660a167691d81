package app_test

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/receive"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// tenantUID is a uid many images run as; two pods of different tenants
// often share it.
const tenantUID = 1000

// openDir is a directory every user may traverse (t.TempDir's are 0700, so
// that nothing in them would be reachable by another uid whatever the test
// does), holding a copy of the crashing program that every user may run.
func openDir(t *testing.T) (dir, prog string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "coredog-tenants-")
	must(t, err)
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	data, err := os.ReadFile(crasher)
	must(t, err)
	prog = filepath.Join(dir, "crashy")
	must(t, os.WriteFile(prog, data, 0o755))
	return dir, prog
}

// asUID runs name with args as uid:uid, no supplementary groups.
func asUID(uid uint32, stdin io.Reader, dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Stdin = stdin
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
	return cmd.CombinedOutput()
}

// crashAs crashes prog as uid in dir (which uid may write) and returns the
// core the kernel wrote there, as uid with mode 0600 (core_pattern "core",
// as on the machines CoreDog is tested on). Where the kernel writes no core
// into the working directory, a process of that uid writes a real core's
// bytes there with mode 0600, which is what the kernel does, and says so.
func crashAs(t *testing.T, uid uint32, dir, prog string) string {
	t.Helper()
	out, err := asUID(uid, nil, dir, "sh", "-c", `ulimit -c unlimited 2>/dev/null || ulimit -S -c "$(ulimit -H -c)"; exec "$0"`, prog)
	if err == nil {
		t.Fatalf("the program did not crash:\n%s", out)
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		matches, _ := filepath.Glob(filepath.Join(dir, "core*"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Size() > 0 {
				return m
			}
		}
	}
	pattern, _ := os.ReadFile("/proc/sys/kernel/core_pattern")
	t.Logf("the kernel wrote no core into %s (core_pattern %q); writing a real core's bytes there as uid %d, mode 0600, as it would", dir, bytes.TrimSpace(pattern), uid)
	name, c := newHarness(t, nil).crash("stand-in")
	data, err := os.ReadFile(c.Core)
	if err != nil {
		data, err = os.ReadFile(name)
	}
	must(t, err)
	core := filepath.Join(dir, "core")
	if out, err := asUID(uid, bytes.NewReader(data), dir, "sh", "-c", `umask 077; cat > core`); err != nil {
		t.Fatalf("writing the core as uid %d: %v\n%s", uid, err, out)
	}
	return core
}

// TestPipeModeCoresAreUnreadableToTheCrashingUID is the attack of one
// tenant's pod on another's cores when both run as the same uid (1000,
// 65532 and 101 are common). In the shared-hostPath set-up (Observe or
// Manage with the policy's hostPath mounted into every pod, a sticky 1777
// directory) the kernel writes each core as the crashing uid with mode
// 0600, so any other process of that uid lists and reads it. In Pipe mode,
// the documented set-up for containers on multi-tenant nodes, the real
// receiver (the agent binary the kernel runs, core on stdin) writes the
// core root-owned, 0600, into a directory the agent keeps private to root:
// the same uid can neither list the directory nor open the core.
func TestPipeModeCoresAreUnreadableToTheCrashingUID(t *testing.T) {
	g := NewWithT(t)
	base, prog := openDir(t)

	// The shared hostPath: sticky and world-writable, so every pod's uid
	// may write its cores into it.
	shared := filepath.Join(base, "shared")
	must(t, os.Mkdir(shared, 0o755))
	must(t, os.Chmod(shared, 0o1777))
	sharedCore := crashAs(t, tenantUID, shared, prog)
	st, err := os.Stat(sharedCore)
	must(t, err)
	g.Expect(st.Sys().(*syscall.Stat_t).Uid).To(Equal(uint32(tenantUID)))
	g.Expect(st.Mode().Perm()).To(Equal(os.FileMode(0o600)))
	core, err := os.ReadFile(sharedCore)
	must(t, err)

	// Another process of the same uid reads that core, and sees its name.
	out, err := asUID(tenantUID, nil, base, "cat", sharedCore)
	g.Expect(err).NotTo(HaveOccurred(), "%s", out)
	g.Expect(bytes.Equal(out, core)).To(BeTrue(), "the same uid read other bytes than the core")
	out, err = asUID(tenantUID, nil, base, "ls", shared)
	g.Expect(err).NotTo(HaveOccurred(), "%s", out)
	g.Expect(string(out)).To(ContainSubstring(filepath.Base(sharedCore)))

	// Pipe mode, with the directory as the kubelet creates a hostPath (0755).
	pipeDir := filepath.Join(base, "pipe")
	must(t, os.Mkdir(pipeDir, 0o755))
	sysctl := filepath.Join(t.TempDir(), "core_pattern")
	must(t, os.WriteFile(sysctl, []byte("core\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(filepath.Dir(sysctl), "core_pipe_limit"), []byte("0\n"), 0o644))
	h := newHarness(t, func(c *app.Config) {
		c.CorePattern, c.SysctlPath, c.ReceiverBinary, c.Dir = "Pipe", sysctl, agentBinary(t), pipeDir
	})
	h.start()
	pattern := waitForSysctl(g, sysctl, receive.CorePattern(pipeDir))

	const pid = "6161"
	uid := strconv.Itoa(tenantUID)
	receiveAsTheKernel(t, pattern, map[string]string{"%P": pid, "%p": "1", "%I": pid, "%i": "1", "%s": "11",
		"%t": "1767225600", "%u": uid, "%g": uid, "%d": "1", "%h": "tenant-a", "%e": "crashy"}, core)
	p, err := corefile.ParsePattern(h.cfg.FileNamePattern)
	must(t, err)
	piped := filepath.Join(pipeDir, p.Render(corefile.NameFields{Hostname: "tenant-a", Executable: "crashy", HostPID: 6161, Signal: 11, Time: time.Unix(1767225600, 0)}))
	got, err := os.ReadFile(piped)
	must(t, err)
	g.Expect(bytes.Equal(got, core)).To(BeTrue(), "the receiver wrote other bytes")
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, filepath.Base(piped))
		g.Expect(cd.Spec.Process.UID).To(HaveValue(Equal(int64(tenantUID))))
		g.Expect(cd.Spec.Process.DumpMode).To(Equal(coredogv1.DumpModeUser))
	}, wait, 100*time.Millisecond).Should(Succeed())

	// The same uid can neither open the core nor list the directory.
	out, err = asUID(tenantUID, nil, base, "cat", piped)
	g.Expect(err).To(HaveOccurred(), "uid %d read a piped core", tenantUID)
	g.Expect(string(out)).To(ContainSubstring("Permission denied"))
	g.Expect(bytes.Contains(out, core[:64])).To(BeFalse())
	out, err = asUID(tenantUID, nil, base, "ls", pipeDir)
	g.Expect(err).To(HaveOccurred(), "uid %d listed the pipe directory:\n%s", tenantUID, out)
	g.Expect(string(out)).To(ContainSubstring("Permission denied"))
	g.Expect(string(out)).NotTo(ContainSubstring("crashy"))
	fi, err := os.Stat(piped)
	must(t, err)
	g.Expect(fi.Sys().(*syscall.Stat_t).Uid).To(Equal(uint32(0)))
	g.Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))
}

// TestRealCoresOwnedByRootAreFlaggedPrivileged: a real core of a uid-1000
// process, as the kernel writes it in Observe and Manage (owned by that
// uid), is an ordinary dump; the same core owned by root, as the kernel
// writes it when fs.suid_dumpable=2 makes it dump a process that is not
// dumpable (set here by chown: the test does not change the node's
// sysctls), is flagged Privileged.
func TestRealCoresOwnedByRootAreFlaggedPrivileged(t *testing.T) {
	g := NewWithT(t)
	base, prog := openDir(t)
	stage := filepath.Join(base, "stage")
	must(t, os.Mkdir(stage, 0o755))
	must(t, os.Chmod(stage, 0o1777))
	core := crashAs(t, tenantUID, stage, prog)
	data, err := os.ReadFile(core)
	must(t, err)

	h := newHarness(t, nil)
	h.start()
	p, err := corefile.ParsePattern(h.cfg.FileNamePattern)
	must(t, err)
	name := func(host string) string {
		return p.Render(corefile.NameFields{Hostname: host, Executable: "crashy", HostPID: 7171, Signal: 11, Time: time.Unix(1767225600, 0)})
	}
	// The kernel's own file, owned by uid 1000, moved in whole.
	user := name("as-its-user")
	must(t, os.Rename(core, filepath.Join(h.dir, user)))
	// The same bytes, owned by root.
	privileged := name("as-root")
	tmp := filepath.Join(h.dir, ".staging")
	must(t, os.WriteFile(tmp, data, 0o600))
	must(t, os.Chown(tmp, 0, 0))
	must(t, os.Rename(tmp, filepath.Join(h.dir, privileged)))

	for file, want := range map[string]coredogv1.DumpMode{user: coredogv1.DumpModeUser, privileged: coredogv1.DumpModePrivileged} {
		g.Eventually(func(g Gomega) {
			cd := h.dumpFor(g, file)
			g.Expect(cd.Spec.ELF).NotTo(BeNil())
			g.Expect(cd.Spec.Process.UID).To(HaveValue(Equal(int64(tenantUID))), "pr_uid of the real core")
			g.Expect(cd.Spec.Process.DumpMode).To(Equal(want))
		}, wait, 100*time.Millisecond).Should(Succeed(), file)
	}
}
