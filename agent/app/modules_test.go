package app_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/receive"
	"github.com/coredog/coredog/internal/wire"
	"github.com/coredog/coredog/test/testcrash"
)

// heldCrash runs the crashing program under gdb until it takes its real
// SIGSEGV, and keeps it there, alive with every mapping it had at the fault,
// as the kernel keeps a process while a pipe receiver runs (the machine's
// core_pattern is not touched). gdb writes its core (gcore) and waits; the
// returned release lets it kill the process.
func heldCrash(t *testing.T) (pid int, core []byte, release func()) {
	t.Helper()
	dir := t.TempDir()
	corePath, ready, done := filepath.Join(dir, "core"), filepath.Join(dir, "ready"), filepath.Join(dir, "done")
	cmd := exec.Command("gdb", "-nx", "-batch", "-ex", "run", "-ex", "gcore "+corePath, "-ex", "shell touch "+ready,
		"-ex", "shell while [ ! -e "+done+" ]; do sleep 0.05; done", "-ex", "kill", "--args", crasher)
	// A file, not a buffer: gdb writes into it while the test reads it.
	out, err := os.Create(filepath.Join(dir, "gdb.out"))
	must(t, err)
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	must(t, cmd.Start())
	output := func() string {
		b, _ := os.ReadFile(out.Name())
		return string(b)
	}
	release = func() {
		_ = os.WriteFile(done, nil, 0o600)
		_ = cmd.Wait()
	}
	t.Cleanup(release)
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gdb did not hold the crash:\n%s", output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	m := regexp.MustCompile(`pid=(\d+)`).FindStringSubmatch(output())
	if m == nil {
		t.Fatalf("no pid in the program's output:\n%s", output())
	}
	pid, _ = strconv.Atoi(m[1])
	core, err = os.ReadFile(corePath)
	must(t, err)
	return pid, core, release
}

func readelfBuildID(t *testing.T, path string) string {
	t.Helper()
	id := testcrash.ReadelfBuildID(t, path)
	if id == "" {
		t.Fatalf("readelf: no build-id in %s", path)
	}
	return id
}

// TestPipeModeCollectsTheModulesOfARealCrash runs the real receiver as the
// kernel does, for a real process held at its SIGSEGV: the receiver must
// collect the executable and its shared libraries through
// /proc/<pid>/map_files, and the agent must list them for the dump and
// serve each file, byte for byte the one on disk, by build-id.
func TestPipeModeCollectsTheModulesOfARealCrash(t *testing.T) {
	g := NewWithT(t)
	bin := agentBinary(t)
	sysctl := filepath.Join(t.TempDir(), "core_pattern")
	must(t, os.WriteFile(sysctl, []byte("core\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(filepath.Dir(sysctl), "core_pipe_limit"), []byte("0\n"), 0o644))
	h := newHarness(t, func(c *app.Config) {
		c.CorePattern, c.SysctlPath, c.ReceiverBinary = "Pipe", sysctl, bin
	})
	pid, core, release := heldCrash(t)
	// The harness's /proc holds the held process as the host's /proc does.
	must(t, os.Symlink("/proc/"+strconv.Itoa(pid), filepath.Join(h.proc, strconv.Itoa(pid))))
	h.start()
	pattern := waitForSysctl(g, sysctl, receive.CorePattern(h.dir))
	p := strconv.Itoa(pid)
	values := map[string]string{"%P": p, "%p": p, "%I": p, "%i": p, "%s": "11", "%t": "1767225600",
		"%u": "0", "%g": "0", "%d": "1", "%h": "held", "%e": "crashy"}
	receiveAsTheKernel(t, pattern, values, core)
	release()
	// The process goes away once the kernel is done with the receiver.
	must(t, os.Remove(filepath.Join(h.proc, p)))
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(h.dir, receive.InstallDir, receive.LogName))
			ls, _ := exec.Command("ls", "-la", h.dir).CombinedOutput()
			t.Logf("receive.log:\n%s\n%s", b, ls)
		}
	})

	name := "core.held.crashy." + p + ".11.1767225600"
	var mods []wire.Module
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, name)
		resp, err := h.client.Get(h.endpoint(g) + wire.DumpsPath + cd.Name + wire.ModulesSuffix)
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		mods = nil
		g.Expect(json.NewDecoder(resp.Body).Decode(&mods)).To(Succeed())
	}, wait, 100*time.Millisecond).Should(Succeed())

	var exe, libc bool
	for _, m := range mods {
		if !m.Collected {
			t.Errorf("%s not collected: %s", m.Path, m.Reason)
			continue
		}
		if want := readelfBuildID(t, m.Path); m.BuildID != want {
			t.Errorf("%s: build-id %s, readelf -n says %s", m.Path, m.BuildID, want)
		}
		resp, err := h.client.Get(h.endpoint(g) + wire.BuildIDPath + m.BuildID)
		must(t, err)
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		must(t, err)
		want, err := os.ReadFile(m.Path)
		must(t, err)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
			t.Errorf("%s: served %d bytes with status %d, the file has %d", m.Path, len(got), resp.StatusCode, len(want))
		}
		exe = exe || m.Path == crasher
		libc = libc || strings.Contains(m.Path, "libc.so")
	}
	if !exe || !libc {
		t.Errorf("executable listed %v, C library listed %v: %+v", exe, libc, mods)
	}
	// The process is gone when the agent reads the core: its backtrace is
	// symbolized from the files the receiver collected.
	var an wire.Analysis
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, name)
		resp, err := h.client.Get(h.endpoint(g) + wire.DumpsPath + cd.Name + wire.AnalysisSuffix)
		g.Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		g.Expect(json.NewDecoder(resp.Body).Decode(&an)).To(Succeed())
	}, wait, 100*time.Millisecond).Should(Succeed())
	named := 0
	for _, st := range an.Stacks {
		for _, f := range st.Frames {
			if f.Module == filepath.Base(crasher) && f.Function != "" {
				named++
			}
		}
	}
	if named == 0 {
		t.Errorf("no frame of %s is symbolized from the collected files: %+v", filepath.Base(crasher), an)
	}

	// A build-id no dump lists is not served, whatever the store holds.
	resp, err := h.client.Get(h.endpoint(g) + wire.BuildIDPath + strings.Repeat("ab", 20))
	must(t, err)
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusNotFound))
}
