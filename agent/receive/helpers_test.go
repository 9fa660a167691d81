package receive

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// Run receives one core without the node-wide budget, as run does for a
// receiver that holds a slot.
func Run(cfg Config, args []string, stdin io.Reader) (string, error) {
	r, err := run(cfg, nil, args, stdin)
	return r.path, err
}

// attackerUID is the unprivileged user the attacks run as.
const attackerUID = 1000

// asAttacker runs script with sh as uid and gid 1000: an unprivileged
// process on the node, or a pod that writes into a shared hostPath.
func asAttacker(t *testing.T, script string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the attack tests change users and need root")
	}
	cmd := exec.Command("/bin/sh", "-ec", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: attackerUID, Gid: attackerUID}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("attacker step %q: %v\n%s", script, err, out)
	}
}

// sharedDir is a world-writable sticky core directory (1777) that uid 1000
// can reach.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		must(t, os.Chmod(p, 0o755))
	}
	must(t, os.Chmod(dir, os.ModeSticky|0o777))
	return dir
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fakeBinary is a stand-in for the agent binary that Install copies.
func fakeBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agent")
	must(t, os.WriteFile(bin, []byte("#!/bin/true\n"), 0o755))
	return bin
}
