// Package attacker runs the steps of tests that perform an attack as an
// unprivileged user on the node: a process of uid 1000, or a pod that writes
// into a shared hostPath. The tests run as root and change users.
package attacker

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// UID is the unprivileged user (and group) the attacks run as.
const UID = 1000

// Run runs script with sh as uid and gid UID, and fails the test if it fails.
func Run(t testing.TB, script string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("the attack tests change users and need root")
	}
	cmd := exec.Command("/bin/sh", "-ec", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: UID, Gid: UID}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("attacker step %q: %v\n%s", script, err, out)
	}
}

// ReachableDir is a temporary directory that uid UID can walk into: it and
// every directory above it up to /tmp are made 0755.
func ReachableDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for p := dir; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// SharedDir is a world-writable sticky directory (a 1777 core directory)
// that uid UID can reach.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir := ReachableDir(t)
	if err := os.Chmod(dir, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	return dir
}
