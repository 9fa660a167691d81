package modstore_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/agent/modstore"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/wire"
)

// openStore makes a store in a fresh root-owned directory.
func openStore(t *testing.T, l modstore.Limits) *modstore.Store {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	inst, err := hostdir.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close() })
	s, err := modstore.Open(inst, l)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// liveModules starts a real dynamically linked process (sleep) and returns
// its pid and its ELF modules as the core would list them: from
// /proc/<pid>/maps, with each file's build-id.
func liveModules(t *testing.T) (int, []corefile.Module) {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	var mods []corefile.Module
	// The dynamic loader maps the libraries after exec: wait for libc.
	for range 200 {
		mods = readMaps(t, pid)
		if len(mods) >= 3 {
			break
		}
		exec.Command("sleep", "0.01").Run() //nolint:errcheck // a pause
	}
	if len(mods) < 3 {
		t.Fatalf("sleep maps %d ELF files", len(mods))
	}
	return pid, mods
}

func readMaps(t *testing.T, pid int) []corefile.Module {
	f, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mods []corefile.Module
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var start, end, off uint64
		var perms, dev, path string
		var ino int
		n, _ := fmt.Sscanf(sc.Text(), "%x-%x %s %x %s %d %s", &start, &end, &perms, &off, &dev, &ino, &path)
		if n < 7 || off != 0 || seen[path] || !strings.HasPrefix(path, "/") {
			continue
		}
		info, err := readID(path)
		if err != nil {
			continue
		}
		seen[path] = true
		mods = append(mods, corefile.Module{Path: path, Start: start, End: end, BuildID: info.ID,
			Mapping: corefile.Mapping{Start: start, End: end, Path: path}})
	}
	return mods
}

func readID(path string) (buildid.Info, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return buildid.Info{}, err
	}
	return buildid.Read(bytes.NewReader(b), int64(len(b)))
}

func reasons(m modstore.Manifest) []wire.ModuleReason {
	var out []wire.ModuleReason
	for _, mod := range m.Modules {
		out = append(out, mod.Reason)
	}
	return out
}

// TestCollectFromALiveProcess collects the executable and the libraries of
// a real process through /proc/<pid>/map_files: each stored file is the
// file on disk, byte for byte, and opens by its build-id.
func TestCollectFromALiveProcess(t *testing.T) {
	s := openStore(t, modstore.Limits{})
	pid, mods := liveModules(t)
	m, err := s.Collect("/proc", int64(pid), "core.1", mods)
	if err != nil {
		t.Fatal(err)
	}
	for i, mod := range m.Modules {
		if !mod.Collected {
			t.Fatalf("%s not collected: %s", mod.Path, mod.Reason)
		}
		f, err := s.Open(mod.BuildID)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		_, _ = got.ReadFrom(f)
		f.Close()
		want, _ := os.ReadFile(mods[i].Path)
		if !bytes.Equal(got.Bytes(), want) {
			t.Errorf("%s: stored %d bytes, not the file's %d", mod.Path, got.Len(), len(want))
		}
	}
	if back, ok, err := s.ReadManifest("core.1"); err != nil || !ok || len(back.Modules) != len(mods) {
		t.Errorf("ReadManifest = %d modules, %v, %v", len(back.Modules), ok, err)
	}
}

// TestCollectRefusesAMismatch: the core names one build-id and the mapping
// holds a file with another (a module a hostile process swapped, or a
// forged core): nothing is kept under the core's build-id.
func TestCollectRefusesAMismatch(t *testing.T) {
	s := openStore(t, modstore.Limits{})
	pid, mods := liveModules(t)
	forged := mods[0]
	forged.BuildID = mods[1].BuildID
	m, err := s.Collect("/proc", int64(pid), "core.2", []corefile.Module{forged})
	if err != nil {
		t.Fatal(err)
	}
	if got := reasons(m); len(got) != 1 || got[0] != wire.ModuleMismatch || m.Modules[0].Collected {
		t.Fatalf("reasons %v, want Mismatch", got)
	}
	if s.Has(mods[1].BuildID) {
		t.Fatal("a file was kept under a build-id it does not have")
	}
}

// TestCollectNeverOpensThePath: the core says a module is at a path that,
// inside the container's root, is a symbolic link to a host file. Collect
// opens mappings only, never paths: with no mapping left to open the
// module is Missing, and no host file is read.
func TestCollectNeverOpensThePath(t *testing.T) {
	s := openStore(t, modstore.Limits{})
	proc := t.TempDir()
	root := filepath.Join(proc, "4242", "root")
	if err := os.MkdirAll(filepath.Join(root, "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "lib", "libc.so.6")); err != nil {
		t.Fatal(err)
	}
	mod := corefile.Module{Path: "/lib/libc.so.6", BuildID: strings.Repeat("ab", 20), Mapping: corefile.Mapping{Start: 0x1000, End: 0x2000, Path: "/lib/libc.so.6"}}
	m, err := s.Collect(proc, 4242, "core.3", []corefile.Module{mod})
	if err != nil {
		t.Fatal(err)
	}
	if got := reasons(m); got[0] != wire.ModuleProcessGone {
		t.Fatalf("reasons %v, want ProcessGone", got)
	}
	// Even with the process alive, a path the core names is not what is
	// read: the mapping is.
	pid, mods := liveModules(t)
	lying := mods[len(mods)-1]
	lying.Path = "/etc/passwd"
	m, err = s.Collect("/proc", int64(pid), "core.4", []corefile.Module{lying})
	if err != nil || !m.Modules[0].Collected {
		t.Fatalf("Collect = %+v, %v", m, err)
	}
	f, err := s.Open(lying.BuildID)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4)
	if _, err := f.Read(head); err != nil || string(head) != "\x7fELF" {
		t.Fatalf("stored file starts %q, want the mapped ELF file, not /etc/passwd", head)
	}
}

// TestCollectIsBounded: the node's byte bound and the per-core count bound
// leave modules Missing with a reason instead of filling the disk.
func TestCollectIsBounded(t *testing.T) {
	pid, mods := liveModules(t)
	small := openStore(t, modstore.Limits{MaxBytes: 4096})
	m, err := small.Collect("/proc", int64(pid), "core.5", mods)
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range m.Modules {
		if mod.Collected || mod.Reason != wire.ModuleNodeLimit {
			t.Errorf("%s: collected %v reason %s, want NodeLimit", mod.Path, mod.Collected, mod.Reason)
		}
	}
	many := make([]corefile.Module, 0, modstore.MaxPerCore+5)
	for i := range modstore.MaxPerCore + 5 {
		many = append(many, corefile.Module{Path: fmt.Sprint("/m", i), BuildID: fmt.Sprintf("%016x", i+1), Mapping: corefile.Mapping{Start: 1, End: 2}})
	}
	s := openStore(t, modstore.Limits{})
	m, err = s.Collect("/proc", int64(pid), "core.6", many)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Modules[len(m.Modules)-1].Reason; got != wire.ModuleTooMany {
		t.Errorf("last reason %s, want TooMany", got)
	}
	if err := s.Add(strings.Repeat("cd", 20), bytes.NewReader(nil), modstore.MaxFileBytes+1); !errors.Is(err, modstore.ErrTooLarge) {
		t.Errorf("Add of a file over MaxFileBytes = %v", err)
	}
}

// TestReleaseKeepsSharedModules: a build-id two cores collected stays
// until both are released.
func TestReleaseKeepsSharedModules(t *testing.T) {
	s := openStore(t, modstore.Limits{})
	pid, mods := liveModules(t)
	for _, c := range []string{"a", "b"} {
		if _, err := s.Collect("/proc", int64(pid), c, mods); err != nil {
			t.Fatal(err)
		}
	}
	id := mods[0].BuildID
	if err := s.Release("a"); err != nil || !s.Has(id) {
		t.Fatalf("after releasing a: %v, held %v", err, s.Has(id))
	}
	if err := s.Release("b"); err != nil || s.Has(id) {
		t.Fatalf("after releasing b: %v, held %v", err, s.Has(id))
	}
}
