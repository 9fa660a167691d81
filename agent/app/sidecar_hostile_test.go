package app_test

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/receive"
)

// TestPipeSidecarsOnlyFromTheReceiver is the attack of a pod that writes
// into the core directory: beside a core it plants the cgroup sidecar the
// pipe receiver would have left, as a FIFO (which, opened for reading,
// would block the capture workers: no more CoreDumps, no disk guard), as a
// symbolic link to a file naming another container, or as a file others may
// write. Each core must still become a CoreDump, attributed to no
// container; a sidecar as the receiver writes it is still taken.
func TestPipeSidecarsOnlyFromTheReceiver(t *testing.T) {
	g := NewWithT(t)
	sysctl := filepath.Join(t.TempDir(), "core_pattern")
	must(t, os.WriteFile(sysctl, []byte("core\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(filepath.Dir(sysctl), "core_pipe_limit"), []byte("0\n"), 0o644))
	h := newHarness(t, func(c *app.Config) {
		// The receiver is installed but never run here.
		c.CorePattern, c.SysctlPath, c.ReceiverBinary = "Pipe", sysctl, "/bin/true"
	})
	h.start()

	const victim = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	const own = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	cgroup := func(id string) []byte { return []byte("0::/system.slice/docker-" + id + ".scope\n") }
	elsewhere := filepath.Join(t.TempDir(), "cgroup")
	must(t, os.WriteFile(elsewhere, cgroup(victim), 0o600))

	plant := map[string]func(path string){
		"fifo":    func(p string) { must(t, syscall.Mkfifo(p, 0o600)) },
		"symlink": func(p string) { must(t, os.Symlink(elsewhere, p)) },
		"writable": func(p string) {
			must(t, os.WriteFile(p, cgroup(victim), 0o600))
			must(t, os.Chmod(p, 0o666))
		},
		"hardlink": func(p string) {
			must(t, os.WriteFile(p, cgroup(victim), 0o600))
			must(t, os.Link(p, p+".second"))
		},
		"receiver": func(p string) { must(t, os.WriteFile(p, cgroup(own), 0o600)) },
	}
	names := map[string]string{}
	pid := 4100
	for kind, fn := range plant {
		pid++
		name := fmt.Sprintf("core.web-0.srv.%d.11.1767225600", pid)
		names[kind] = name
		fn(filepath.Join(h.dir, "."+name+receive.CgroupSuffix))
		must(t, os.WriteFile(filepath.Join(h.dir, name), []byte("not an ELF core"), 0o600))
	}
	for kind, name := range names {
		want := ""
		if kind == "receiver" {
			want = "docker://" + own
		}
		g.Eventually(func(g Gomega) {
			g.Expect(h.dumpFor(g, name).Spec.ContainerID).To(Equal(want), kind)
		}, wait, 100*time.Millisecond).Should(Succeed(), kind)
	}
}
