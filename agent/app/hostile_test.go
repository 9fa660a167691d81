package app_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/klauspost/compress/zstd"
	. "github.com/onsi/gomega"

	"github.com/coredog/coredog/agent/app"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/test/procio"
)

const hugeSparse = 100 << 30

// writeHugeSparse puts a 100 GiB file that is almost all hole into the
// watched directory (through a rename, as a finished core would arrive), or
// skips the test where the file system cannot hold one.
func writeHugeSparse(t *testing.T, h *harness, name string) string {
	t.Helper()
	tmp := filepath.Join(h.dir, ".tmp-"+name)
	f, err := os.Create(tmp)
	must(t, err)
	_, err = f.WriteAt([]byte("\x7fELF-not-really"), 0)
	must(t, err)
	if err := f.Truncate(hugeSparse); err != nil {
		f.Close()
		t.Skipf("this file system cannot hold a %d-byte sparse file: %v", int64(hugeSparse), err)
	}
	must(t, f.Close())
	p := filepath.Join(h.dir, name)
	must(t, os.Rename(tmp, p))
	return p
}

// TestHugeSparseFileIsRefusedByTheNodeLimit: with the default 10Gi
// maxNodeUsage, a 100 GiB file (even one that is a hole and takes no disk)
// counts at its apparent size, so it is refused and removed at once; it is
// never read through.
func TestHugeSparseFileIsRefusedByTheNodeLimit(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, nil)
	h.start()
	before := procio.MustReadChars(t)
	name := "core.huge.app.77.11.1767225600"
	p := writeHugeSparse(t, h, name)
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, name)
		g.Expect(cd.Spec.Size).To(Equal(int64(hugeSparse)))
		g.Expect(cd.Spec.RefusedReason).To(Equal(coredogv1.ReasonQuotaExceeded))
	}, wait, 100*time.Millisecond).Should(Succeed())
	g.Eventually(fileGone(p), wait, 100*time.Millisecond).Should(BeTrue())
	g.Expect(procio.MustReadChars(t)-before).To(BeNumerically("<", 64<<20), "bytes read by the agent")
}

// TestHugeSparseFileWithinTheLimitIsServedAndCancellable: a node limit
// large enough admits it; a download streams the holes without reading them
// and, once the client gives up, ends on the agent and frees its slot.
func TestHugeSparseFileWithinTheLimitIsServedAndCancellable(t *testing.T) {
	g := NewWithT(t)
	h := newHarness(t, func(c *app.Config) { c.MaxNodeUsage = "200Gi"; c.MaxParallel = 1 })
	h.start()
	name := "core.huge.app.78.11.1767225600"
	writeHugeSparse(t, h, name)
	var cdName string
	g.Eventually(func(g Gomega) {
		cd := h.dumpFor(g, name)
		g.Expect(cd.Spec.Size).To(Equal(int64(hugeSparse)))
		g.Expect(cd.Spec.RefusedReason).To(BeEmpty())
		g.Expect(cd.Spec.DisplaySize).To(Equal("100Gi"))
		cdName = cd.Name
	}, wait, 100*time.Millisecond).Should(Succeed())

	before := procio.MustReadChars(t)
	for range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.endpoint(g)+"/v1/dumps/"+cdName+"?compression=zstd", nil)
		g.Expect(err).NotTo(HaveOccurred())
		// With MaxParallel 1, the second round gets 200 only if the first
		// download ended on the agent when its client went away.
		var resp *http.Response
		g.Eventually(func(g Gomega) {
			resp, err = h.client.Do(req.Clone(ctx))
			g.Expect(err).NotTo(HaveOccurred())
			if resp.StatusCode != http.StatusOK {
				resp.Body.Close()
			}
			g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
		}, wait, 100*time.Millisecond).Should(Succeed())
		dec, err := zstd.NewReader(resp.Body)
		g.Expect(err).NotTo(HaveOccurred())
		head := make([]byte, 32<<20)
		_, err = io.ReadFull(dec, head)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(head[:4])).To(Equal("\x7fELF"))
		g.Expect(strings.Trim(string(head[64<<10:]), "\x00")).To(BeEmpty(), "the hole streams as zeros")
		dec.Close()
		cancel()
		resp.Body.Close()
	}
	g.Expect(procio.MustReadChars(t)-before).To(BeNumerically("<", 256<<20), "bytes read to start two downloads of a file with 16 bytes of data")
}

// TestDumpContentsNeverReachTheLogs runs the agent with every log level on
// and a core whose bytes hold a secret: capturing and serving it must not
// put those bytes in a log line or in the CoreDump.
func TestDumpContentsNeverReachTheLogs(t *testing.T) {
	g := NewWithT(t)
	const secret = "AKIA-never-logged-7f3c9e"
	var mu sync.Mutex
	var logs strings.Builder
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		logs.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{Verbosity: 10})
	h := newHarness(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go h.signLeases(ctx)
	go func() { done <- app.Run(ctx, h.cfg, restCfg, scheme.New(), log) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("agent: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("agent did not stop")
		}
	})

	// A name the parser understands, contents that are not an ELF core but
	// carry the secret where a parser might quote them in an error.
	name := "core.web-0.app.79.11.1767225600"
	data := []byte("\x7fELF" + secret + strings.Repeat(" password="+secret, 1000))
	must(t, os.WriteFile(filepath.Join(h.dir, name), data, 0o600))
	var cd *coredogv1.CoreDump
	g.Eventually(func(g Gomega) { cd = h.dumpFor(g, name) }, wait, 100*time.Millisecond).Should(Succeed())
	code, raw, _ := h.download(g, cd.Name)
	g.Expect(code).To(Equal(http.StatusOK))
	g.Expect(raw).To(Equal(data))
	code, _, _ = h.download(g, "core-not-registered")
	g.Expect(code).To(Equal(http.StatusNotFound))

	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("agent: %v", err)
	}
	done <- nil
	mu.Lock()
	defer mu.Unlock()
	g.Expect(logs.Len()).To(BeNumerically(">", 0))
	g.Expect(logs.String()).NotTo(ContainSubstring(secret))
	spec, err := json.Marshal(cd)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(spec)).NotTo(ContainSubstring(secret))
}
