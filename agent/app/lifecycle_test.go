package app_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/test/testcrash"
)

func fileGone(path string) func() bool {
	return func() bool {
		_, err := os.Lstat(path)
		return errors.Is(err, os.ErrNotExist)
	}
}

func TestFilesPresentAtStartSurviveRestartsWithoutDuplicates(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, nil)
	coreName, _ := h.crash("api-0")
	textName := "core.batch-1.sh.999999.6.1767225600"
	must(t, os.WriteFile(filepath.Join(h.dir, textName), []byte("not a core\n"), 0o600))
	h.start()

	var core, text *coredogv1.CoreDump
	g.Eventually(func(g Gomega) {
		core, text = h.dumpFor(g, coreName), h.dumpFor(g, textName)
	}, wait, 100*time.Millisecond).Should(Succeed())
	g.Expect(core.Spec.DetectedBy).To(Equal(coredogv1.DetectedByRescan))
	g.Expect(text.Spec.ParseError).To(ContainSubstring("not an ELF"))
	g.Expect(text.Spec.ELF).To(BeNil())
	g.Expect(text.Spec.Process.Executable).To(Equal("sh"))
	g.Expect(text.Spec.Process.SignalName).To(Equal("SIGABRT"))

	// Restart: the text file's dump was skipped meanwhile, the core's is still pending.
	h.stop()
	setPhase(g, text, coredogv1.PhaseSkipped)
	h.start()
	g.Eventually(fileGone(filepath.Join(h.dir, textName)), wait, 100*time.Millisecond).Should(BeTrue())
	g.Eventually(func(g Gomega) {
		code, got, _ := h.download(g, core.Name)
		g.Expect(code).To(Equal(http.StatusOK))
		g.Expect(got).NotTo(BeEmpty())
	}, wait, 200*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(2)) }, time.Second, 200*time.Millisecond).Should(Succeed())

	// Deleting a CoreDump by hand releases its file too.
	g.Expect(k8s.Delete(context.Background(), core)).To(Succeed())
	g.Eventually(fileGone(filepath.Join(h.dir, coreName)), wait, 100*time.Millisecond).Should(BeTrue())
}

func TestContainerIDIsReadWhileTheDumpIsWritten(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, nil)
	const pid = "31337"
	const id = "4d3c2b1a0f9e8d7c6b5a49382716050f4e3d2c1b0a99887766554433221100ff"
	must(t, os.MkdirAll(filepath.Join(h.proc, pid), 0o755))
	must(t, os.WriteFile(filepath.Join(h.proc, pid, "cgroup"), []byte(
		"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678_90ef_1234_567890abcdef.slice/cri-containerd-"+id+".scope\n"), 0o644))
	h.start()
	// The dumping process below is found only while the agent watches: a
	// file the agent first sees after the process is gone has no cgroup to
	// read. A probe file with no process behind it shows the agent is up.
	probe := "core.probe.probe.1.11.1767225600"
	must(t, os.WriteFile(filepath.Join(h.dir, probe), []byte("probe"), 0o600))
	g.Eventually(func(g Gomega) { h.dumpFor(g, probe) }, wait, 100*time.Millisecond).Should(Succeed())
	name := "core.web-1.server." + pid + ".11.1767225600"
	path := filepath.Join(h.dir, name)
	f, err := os.Create(path)
	must(t, err)
	_, _ = f.WriteString("first half ")
	// The dumping process is alive: nothing may be captured however long the pause.
	time.Sleep(800 * time.Millisecond)
	g.Expect(h.dumps(g)).To(HaveLen(1))
	_, _ = f.WriteString("second half")
	must(t, f.Close())
	must(t, os.RemoveAll(filepath.Join(h.proc, pid)))
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, name)
		g.Expect(cd.Spec.ContainerID).To(Equal("containerd://" + id))
		g.Expect(cd.Spec.Size).To(Equal(int64(len("first half second half"))))
	}, wait, 100*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(2)) }, time.Second, 200*time.Millisecond).Should(Succeed())
}

func TestQuotaRefusesAndRemovesFile(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, func(c *app.Config) { c.MaxNodeUsage = "4Ki" })
	h.start()
	name := "core.big-0.hog.1.11.1767225600"
	must(t, os.WriteFile(filepath.Join(h.dir, name), make([]byte, 64<<10), 0o600))
	g.Eventually(func(g Gomega) {
		g.Expect(h.dumpFor(g, name).Spec.RefusedReason).To(Equal(coredogv1.ReasonQuotaExceeded))
	}, wait, 100*time.Millisecond).Should(Succeed())
	g.Expect(fileGone(filepath.Join(h.dir, name))()).To(BeTrue())
}

func TestHostileEntriesAreNeitherCapturedNorServed(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, nil)
	must(t, os.Symlink("/etc/passwd", filepath.Join(h.dir, "core.evil.ln.1.11.1")))
	must(t, syscall.Mkfifo(filepath.Join(h.dir, "core.evil.fifo.2.11.1"), 0o600))
	must(t, os.Mkdir(filepath.Join(h.dir, "core.evil.dir.3.11.1"), 0o700))
	outside := filepath.Join(t.TempDir(), "secret")
	must(t, os.WriteFile(outside, []byte("token=hunter2"), 0o600))
	must(t, os.Link(outside, filepath.Join(h.dir, "core.evil.hardlink.4.11.1")))
	must(t, os.WriteFile(filepath.Join(h.dir, "core.ok.fine.5.11.1"), []byte("x"), 0o600))
	h.start()
	g.Eventually(func(g Gomega) { h.dumpFor(g, "core.ok.fine.5.11.1") }, wait, 100*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(1)) }, 2*time.Second, 200*time.Millisecond).Should(Succeed())

	// A CoreDump made by hand for a file the agent never registered is not served.
	forged := &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: "core-forged", Namespace: ns},
		Spec: coredogv1.CoreDumpSpec{PolicyName: h.cfg.Policy, NodeName: h.cfg.NodeName, FileName: "../../etc/passwd",
			Size: 10, DetectedAt: metav1.Now(), DetectedBy: coredogv1.DetectedByWatch},
	}
	must(t, k8s.Create(context.Background(), forged))
	for _, name := range []string{forged.Name, "..%2F..%2Fetc%2Fpasswd", "core-0000"} {
		code, _, _ := h.download(g, name)
		g.Expect(code).To(Equal(http.StatusNotFound), name)
	}
	// And deleting it touches nothing on the node.
	must(t, k8s.Delete(context.Background(), forged))
	time.Sleep(300 * time.Millisecond)
	_, err := os.Stat(outside)
	g.Expect(err).NotTo(HaveOccurred())
}

func TestOddNamesBecomeCoreDumpsWithReadableNames(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, nil)
	long := "core." + strings.Repeat("h", 255-len("core.")-len(".x.1.11.1")) + ".x.1.11.1"
	names := map[string]string{
		"core.my host.my app.7.11.1767225600": "core.my host.my app.7.11.1767225600",
		"core.web\n0.app.8.11.1767225600":     "",
		"core.caf\xe9.app.9.11.1767225600":    `core.caf\xe9.app.9.11.1767225600`,
		long:                                  long,
	}
	// The keys above are written with Go escapes; turn them into the bytes.
	raw := map[string]string{}
	for k, want := range names {
		name := strings.NewReplacer(`\n`, "\n", `\xe9`, "\xe9").Replace(k)
		if want == "" {
			want = name
		}
		raw[name] = want
	}
	for name := range raw {
		must(t, os.WriteFile(filepath.Join(h.dir, name), []byte("odd"), 0o600))
	}
	// A device file named like a core is never touched.
	must(t, syscall.Mknod(filepath.Join(h.dir, "core.dev.null.1.11.1"), syscall.S_IFCHR|0o600, 1<<8|3))
	h.start()
	g.Eventually(func(g Gomega) {
		var got []string
		for _, cd := range h.dumps(g) {
			got = append(got, cd.Spec.FileName)
		}
		var want []string
		for _, v := range raw {
			want = append(want, v)
		}
		g.Expect(got).To(ConsistOf(want))
	}, wait, 200*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(len(raw))) }, time.Second, 200*time.Millisecond).Should(Succeed())
	for _, cd := range h.dumps(g) {
		if strings.HasPrefix(cd.Spec.FileName, "core.my host") {
			g.Expect(cd.Spec.Process.Hostname).To(Equal("my host"))
			g.Expect(cd.Spec.Process.Executable).To(Equal("my app"))
		}
	}
}

func TestManagedCorePatternIsRestoredOnExit(t *testing.T) {
	g := NewWithT(t)
	sysctl := filepath.Join(t.TempDir(), "core_pattern")
	must(t, os.WriteFile(sysctl, []byte("core\n"), 0o644))
	h := newHarness(t, func(c *app.Config) { c.CorePattern = "Manage"; c.SysctlPath = sysctl })
	h.start()
	want := h.dir + "/" + coredogv1.DefaultFileNamePattern
	waitForSysctl(g, sysctl, want)
	h.stop()
	b, err := os.ReadFile(sysctl)
	must(t, err)
	g.Expect(strings.TrimSpace(string(b))).To(Equal("core"))
}

func TestAPIServerAwayKeepsFilesAndRetries(t *testing.T) {
	g := NewWithT(t)
	proxy := newToggleProxy(t, restCfg.Host)
	h := newHarness(t, nil)
	cfg := rest.CopyConfig(restCfg)
	cfg.Host = "https://" + proxy.addr()
	h.startWith(cfg)
	g.Eventually(func(g Gomega) { h.endpoint(g) }, wait, 100*time.Millisecond).Should(Succeed())

	proxy.setDown(true)
	name := "core.db-0.postgres.77.11.1767225600"
	must(t, os.WriteFile(filepath.Join(h.dir, name), []byte("dump bytes"), 0o600))
	time.Sleep(2 * time.Second)
	g.Expect(h.dumps(g)).To(BeEmpty())
	g.Expect(fileGone(filepath.Join(h.dir, name))()).To(BeFalse(), "the file must stay while its CoreDump does not exist")
	proxy.setDown(false)
	g.Eventually(func(g Gomega) { h.dumpFor(g, name) }, 45*time.Second, 200*time.Millisecond).Should(Succeed())
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(1)) }, time.Second, 200*time.Millisecond).Should(Succeed())
}

// toggleProxy forwards TCP to the API server and, when down, refuses and
// cuts every connection, as an API server that went away would.
type toggleProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newToggleProxy(t *testing.T, host string) *toggleProxy {
	u, err := url.Parse(host)
	must(t, err)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &toggleProxy{t: t, ln: ln, target: u.Host, conns: map[net.Conn]struct{}{}}
	t.Cleanup(func() { _ = ln.Close(); p.setDown(true) })
	go p.serve()
	return p
}

func (p *toggleProxy) addr() string { return p.ln.Addr().String() }

func (p *toggleProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
	}
}

func (p *toggleProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *toggleProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		if !p.track(c) {
			_ = c.Close()
			continue
		}
		go func() {
			up, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(up) {
				_ = c.Close()
				return
			}
			go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
			_, _ = io.Copy(c, up)
			_ = c.Close()
		}()
	}
}

// uploader stands in for the manager: it downloads every new dump of h, and
// stores it and marks it Uploaded when the bytes are what the CoreDump
// recorded, or marks it Failed when they are not (the file changed after
// capture), as the manager's integrity check does.
type uploader struct {
	mu     sync.Mutex
	stored map[string][]byte
	failed map[string]bool
}

func (h *harness) runUploader(t *testing.T) *uploader {
	u := &uploader{stored: map[string][]byte{}, failed: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	go func() {
		defer close(done)
		g := NewGomega(func(message string, _ ...int) { t.Logf("uploader: %s", message) })
		for ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			var list coredogv1.CoreDumpList
			if err := k8s.List(ctx, &list, client.InNamespace(ns)); err != nil {
				continue
			}
			for i := range list.Items {
				cd := &list.Items[i]
				if cd.Spec.PolicyName != h.cfg.Policy || cd.Status.Phase != "" {
					continue
				}
				code, raw, _ := h.download(g, cd.Name)
				phase := coredogv1.PhaseUploaded
				u.mu.Lock()
				if code != http.StatusOK || int64(len(raw)) != cd.Spec.Size {
					phase = coredogv1.PhaseFailed
					u.failed[cd.Name] = true
				} else {
					u.stored[cd.Name] = raw
				}
				u.mu.Unlock()
				cd.Status.Phase = phase
				_ = k8s.Status().Update(ctx, cd)
			}
		}
	}()
	return u
}

func (u *uploader) object(name string) ([]byte, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	b, ok := u.stored[name]
	return b, ok
}

// TestPausingCoreWriterIsStoredWhole writes a real core under its final
// name in two halves, with a pause of twice the settle time between them, as
// the kernel does on a slow or throttled disk, while a stand-in manager
// uploads whatever CoreDump appears at once. With the host's /proc the
// dumping process is alive meanwhile; without it, the core's program headers
// say it is not done. Either way: one CoreDump, of the whole file, stored
// byte for byte, and the file deleted only then. Before the declared size
// was read, the run without /proc captured, stored and deleted the first
// half, and the second half went to an unlinked file.
func TestPausingCoreWriterIsStoredWhole(t *testing.T) {
	for _, withProc := range []bool{true, false} {
		t.Run(map[bool]string{true: "with /proc", false: "without /proc"}[withProc], func(t *testing.T) {
			g := NewWithT(t)
			h := newHarness(t, func(c *app.Config) {
				if !withProc {
					c.ProcRoot = ""
				}
				// Far past the pause: a slow machine cannot make the first
				// half look cut.
				c.CutQuietTime = 5 * time.Minute
			})
			c, err := testcrash.Run(crasher, t.TempDir(), t.Logf)
			must(t, err)
			core, err := os.ReadFile(c.Core)
			must(t, err)
			pid := strconv.Itoa(c.PID)
			if withProc {
				must(t, os.MkdirAll(filepath.Join(h.proc, pid), 0o755))
			}
			h.start()
			u := h.runUploader(t)
			g.Eventually(func(g Gomega) { h.endpoint(g) }, wait, 100*time.Millisecond).Should(Succeed())

			p, _ := corefile.ParsePattern(h.cfg.FileNamePattern)
			name := p.Render(corefile.NameFields{Hostname: "slow-0", Executable: "crashy", HostPID: int64(c.PID), Signal: 11, Time: time.Unix(1767225600, 0)})
			path := filepath.Join(h.dir, name)
			f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
			must(t, err)
			half := len(core) / 2
			_, err = f.Write(core[:half])
			must(t, err)
			time.Sleep(2 * h.cfg.SettleTime)
			_, err = f.Write(core[half:])
			must(t, err)
			must(t, f.Close())
			if withProc {
				must(t, os.RemoveAll(filepath.Join(h.proc, pid)))
			}

			var cd *coredogv1.CoreDump
			g.Eventually(func(g Gomega) {
				cd = h.dumpFor(g, name)
				g.Expect(cd.Status.Phase).To(Equal(coredogv1.PhaseUploaded))
			}, wait, 100*time.Millisecond).Should(Succeed())
			stored, ok := u.object(cd.Name)
			g.Expect(ok).To(BeTrue())
			g.Expect(stored).To(Equal(core), "the stored object must be the whole core")
			g.Expect(cd.Spec.Size).To(Equal(int64(len(core))))
			g.Expect(cd.Spec.ELF).NotTo(BeNil())
			g.Expect(cd.Spec.ELF.Truncated).To(BeFalse())
			g.Expect(cd.Spec.Supersedes).To(BeEmpty())
			g.Eventually(fileGone(path), wait, 100*time.Millisecond).Should(BeTrue())
			g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(HaveLen(1)) }, time.Second, 200*time.Millisecond).Should(Succeed())
		})
	}
}

// TestFileChangedAfterCaptureIsKeptAndCapturedAgain: with no /proc and a
// file that declares no size (not an ELF core), a writer that pauses past
// the settle time has its first part captured. It goes on writing while that
// CoreDump becomes Uploaded: the agent must not delete the file (it checks
// size, mtime and ctime on an O_NOFOLLOW descriptor right before the
// unlink), and captures it again, whole, in a CoreDump that names the first
// in spec.supersedes; that one's file is deleted once it is Uploaded.
func TestFileChangedAfterCaptureIsKeptAndCapturedAgain(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, func(c *app.Config) { c.ProcRoot = "" })
	h.start()
	// Serving from the start: waiting for the certificate below would let
	// the paused writer's file settle.
	h.endpoint(g)
	name := "core.grow-0.writer.4343.11.1767225600"
	path := filepath.Join(h.dir, name)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	must(t, err)
	defer f.Close()
	written := []byte("the first part, ")
	_, err = f.Write(written)
	must(t, err)
	var first *coredogv1.CoreDump
	g.Eventually(func(g Gomega) { first = h.dumpFor(g, name) }, wait, 50*time.Millisecond).Should(Succeed())
	g.Expect(first.Spec.Size).To(Equal(int64(len(written))))

	// The writer resumes, then the manager stores the first dump; the
	// writer keeps writing (more often than the settle time, so that the
	// detector cannot take the file meanwhile) until the agent has let go
	// of that dump.
	_, err = f.Write([]byte("resumed, "))
	must(t, err)
	written = append(written, "resumed, "...)
	setPhase(g, first, coredogv1.PhaseUploaded)
	deadline := time.Now().Add(wait)
	for {
		if code, _, _ := h.download(g, first.Name); code == http.StatusNotFound {
			break
		}
		chunk := []byte("more, ")
		_, err = f.Write(chunk)
		must(t, err)
		written = append(written, chunk...)
		if code, _, _ := h.download(g, first.Name); code == http.StatusNotFound {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent still serves %s %s after it was Uploaded", first.Name, wait)
		}
		time.Sleep(50 * time.Millisecond)
	}
	onNode, err := os.ReadFile(path)
	must(t, err)
	g.Expect(onNode).To(Equal(written), "the agent deleted a file that changed after it was captured")
	_, err = f.Write([]byte("and the end"))
	must(t, err)
	written = append(written, "and the end"...)
	must(t, f.Close())

	var second *coredogv1.CoreDump
	g.Eventually(func(g Gomega) {
		for _, cd := range h.dumps(g) {
			if cd.Name != first.Name && cd.Spec.Size == int64(len(written)) {
				second = &cd
			}
		}
		g.Expect(second).NotTo(BeNil())
	}, wait, 100*time.Millisecond).Should(Succeed())
	g.Expect(second.Spec.FileName).To(Equal(name))
	g.Expect(second.Spec.Supersedes).To(Equal(first.Name))
	code, got, _ := h.download(g, second.Name)
	g.Expect(code).To(Equal(http.StatusOK))
	g.Expect(got).To(Equal(written))
	setPhase(g, second, coredogv1.PhaseUploaded)
	g.Eventually(fileGone(path), wait, 100*time.Millisecond).Should(BeTrue())
	g.Consistently(func(g Gomega) {
		dumps := h.dumps(g)
		g.Expect(dumps).To(HaveLen(2))
	}, time.Second, 200*time.Millisecond).Should(Succeed())
}

// TestCutCoreIsCapturedAfterCutQuietTime: without /proc, a core that stays
// shorter than its program headers say (RLIMIT_CORE, a full disk) is held
// for the cut quiet time, not the settle time, and then captured as it is,
// marked truncated.
func TestCutCoreIsCapturedAfterCutQuietTime(t *testing.T) {
	g := NewWithT(t)
	const cutQuiet = 3 * time.Second
	h := newHarness(t, func(c *app.Config) { c.ProcRoot = ""; c.CutQuietTime = cutQuiet })
	c, err := testcrash.Run(crasher, t.TempDir(), t.Logf)
	must(t, err)
	core, err := os.ReadFile(c.Core)
	must(t, err)
	h.start()
	g.Eventually(func(g Gomega) { h.endpoint(g) }, wait, 100*time.Millisecond).Should(Succeed())
	name := "core.cut-0.crashy." + strconv.Itoa(c.PID) + ".11.1767225600"
	cut := core[:len(core)/3]
	must(t, os.WriteFile(filepath.Join(h.dir, name), cut, 0o600))
	written := time.Now()
	// Well past the settle time, well short of the cut quiet time.
	g.Consistently(func(g Gomega) { g.Expect(h.dumps(g)).To(BeEmpty()) }, cutQuiet/2, 100*time.Millisecond).Should(Succeed())
	var cd *coredogv1.CoreDump
	g.Eventually(func(g Gomega) { cd = h.dumpFor(g, name) }, wait, 100*time.Millisecond).Should(Succeed())
	// creationTimestamp has whole seconds.
	g.Expect(cd.CreationTimestamp.Sub(written)).To(BeNumerically(">=", cutQuiet-time.Second))
	g.Expect(cd.Spec.Size).To(Equal(int64(len(cut))))
	g.Expect(cd.Spec.ELF).NotTo(BeNil())
	g.Expect(cd.Spec.ELF.Truncated).To(BeTrue())
	code, got, _ := h.download(g, cd.Name)
	g.Expect(code).To(Equal(http.StatusOK))
	g.Expect(got).To(Equal(cut))
}
