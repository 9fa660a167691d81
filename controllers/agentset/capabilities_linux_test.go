package agentset

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// capsHelperEnv makes the test binary, run again under setpriv with the
// capabilities an Observe agent gets, act as the agent in
// TestObserveAgentCapabilities instead of running tests.
const capsHelperEnv = "COREDOG_CAPS_HELPER"

func TestMain(m *testing.M) {
	if dir := os.Getenv(capsHelperEnv); dir != "" {
		os.Exit(actAsAgent(dir))
	}
	os.Exit(m.Run())
}

// actAsAgent reads the core another user wrote 0600 (what the agent must
// do), deletes it from the sticky directory, and tries the attack: from a
// handle of a file outside the core directory, open it with
// open_by_handle_at. It reports each outcome on stdout.
func actAsAgent(dir string) int {
	core := filepath.Join(dir, "cores", "core.1")
	if b, err := os.ReadFile(core); err != nil || string(b) != "core bytes" {
		fmt.Printf("read-core: failed: %v\n", err)
	} else {
		fmt.Println("read-core: ok")
	}
	if err := os.Remove(core); err != nil {
		fmt.Printf("remove-core: failed: %v\n", err)
	} else {
		fmt.Println("remove-core: ok")
	}
	handle, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(dir, "kubelet", "key"), 0)
	if err != nil {
		fmt.Printf("handle: failed: %v\n", err)
		return 0
	}
	mount, err := unix.Open(filepath.Join(dir, "cores"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		fmt.Printf("mount-fd: failed: %v\n", err)
		return 0
	}
	fd, err := unix.OpenByHandleAt(mount, handle, unix.O_RDONLY)
	switch {
	case err == nil:
		b := make([]byte, 64)
		n, _ := unix.Read(fd, b)
		fmt.Printf("open-by-handle: ok: %q\n", b[:n])
	case errors.Is(err, unix.EPERM):
		fmt.Println("open-by-handle: EPERM")
	default:
		fmt.Printf("open-by-handle: failed: %v\n", err)
	}
	return 0
}

// TestObserveAgentCapabilities runs a process as root with exactly the
// capabilities RenderDaemonSet gives an Observe agent (setpriv drops the
// rest from the bounding set) and performs the agent's work and the attack
// of a compromised agent: it must read a core another user wrote 0600 and
// remove it from a sticky directory, and must not open a file outside the
// core directory (the node's kubelet key) by handle.
func TestObserveAgentCapabilities(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs a process as root with the agent's capabilities: run it as root")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	ds := RenderDaemonSet(&coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}, Options{Namespace: "ns", DefaultImage: "i"})
	caps := ds.Spec.Template.Spec.Containers[0].SecurityContext.Capabilities
	bounding := []string{"-all"}
	for _, c := range caps.Add {
		bounding = append(bounding, "+"+strings.ToLower(string(c)))
	}

	dir := t.TempDir()
	cores := filepath.Join(dir, "cores")
	kubelet := filepath.Join(dir, "kubelet")
	for _, d := range []string{cores, kubelet} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// A sticky core directory, as /var/lib/coredog/cores may be (1777), with
	// a core the kernel wrote for uid 1000.
	if err := os.Chmod(cores, 0o1777); err != nil {
		t.Fatal(err)
	}
	core := filepath.Join(cores, "core.1")
	if err := os.WriteFile(core, []byte("core bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(core, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(kubelet, "key"), []byte("kubelet private key"), 0o600); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(setpriv, "--bounding-set="+strings.Join(bounding, ","), "--inh-caps=-all", "--", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), capsHelperEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("running as the agent (%s): %v\n%s", strings.Join(bounding, ","), err, out)
	}
	got := string(out)
	for _, want := range []string{"read-core: ok", "remove-core: ok", "open-by-handle: EPERM"} {
		if !strings.Contains(got, want) {
			t.Errorf("with %v the agent's process says:\n%s\nwant %q", caps.Add, got, want)
		}
	}
}
