package receive

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestCorePatternFitsTheKernel(t *testing.T) {
	p := CorePattern("/var/lib/coredog/cores")
	if len(p) > 127 {
		t.Fatalf("%q is %d bytes", p, len(p))
	}
	if !strings.HasPrefix(p, "|/var/lib/coredog/cores/.coredog/agent receive %P") || !strings.HasSuffix(p, " %d %h %e") {
		t.Fatalf("pattern %q", p)
	}
	// The longest hostPath a Pipe policy may have (73 bytes) leaves no room
	// for %d: the pattern goes without, and still fits.
	long := "/" + strings.Repeat("d", 72)
	if p := CorePattern(long); len(p) > 127 || !strings.HasSuffix(p, " "+SpecifiersWithoutDumpMode) {
		t.Fatalf("%q is %d bytes", p, len(p))
	}
}

func TestParseArgs(t *testing.T) {
	cases := []struct {
		name     string
		args     []string
		err      string
		dumpMode int
	}{
		{"kernel values", []string{"4242", "7", "4243", "8", "11", "1767225600", "1000", "1000", "1", "web-0", "my app"}, "", 1},
		{"a privileged dump", []string{"4242", "7", "4243", "8", "11", "1767225600", "1000", "1000", "2", "web-0", "my app"}, "", 2},
		{"a pattern without %d", []string{"4242", "7", "4243", "8", "11", "1767225600", "1000", "1000", "web-0", "my app"}, "", 0},
		{"no dump mode the kernel writes: unknown, the core is kept", []string{"4242", "7", "4243", "8", "11", "1767225600", "1000", "1000", "0", "web-0", "my app"}, "", 0},
		{"too few", []string{"4242"}, "want the 11 values", 0},
		{"not a number", []string{"x", "7", "4243", "8", "11", "1767225600", "1000", "1000", "h", "e"}, "%P", 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := ParseArgs(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f.HostPID != 4242 || f.PID != 7 || f.HostTID != 4243 || f.TID != 8 || f.Signal != 11 || *f.UID != 1000 ||
				f.Hostname != "web-0" || f.Executable != "my app" || f.Time.Unix() != 1767225600 || f.DumpMode != tc.dumpMode {
				t.Fatalf("fields %+v", f)
			}
		})
	}
}

func TestRunWritesTheCoreWholeAndKeepsTheCgroup(t *testing.T) {
	dir, proc := t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(proc, "4242"), 0o755); err != nil {
		t.Fatal(err)
	}
	cgroup := "0::/kubepods.slice/cri-containerd-" + strings.Repeat("ab", 32) + ".scope\n"
	if err := os.WriteFile(filepath.Join(proc, "4242", "cgroup"), []byte(cgroup), 0o644); err != nil {
		t.Fatal(err)
	}
	core := make([]byte, 3<<20)
	_, _ = rand.Read(core)
	args := []string{"4242", "7", "4242", "7", "11", "1767225600", "0", "0", "web-0", "server"}
	cfg := Config{Dir: dir, FileNamePattern: "core.%h.%e.%P.%s.%t", ProcRoot: proc}
	path, err := Run(cfg, args, bytes.NewReader(core))
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(path) != "core.web-0.server.4242.11.1767225600" {
		t.Fatalf("path %s", path)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, core) {
		t.Fatal("the core differs")
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	side, err := os.ReadFile(filepath.Join(dir, ".core.web-0.server.4242.11.1767225600"+CgroupSuffix))
	if err != nil || string(side) != cgroup {
		t.Fatalf("cgroup sidecar %q, %v", side, err)
	}
	// The same name again does not replace the first core.
	second, err := Run(cfg, args, strings.NewReader("second"))
	if err != nil {
		t.Fatal(err)
	}
	if second == path {
		t.Fatal("the second core replaced the first")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, core) {
		t.Fatal("the first core changed")
	}
	// Nothing half-written is left behind.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".receiving-") {
			t.Fatalf("left %s", e.Name())
		}
	}
}

func TestRunCapsTheSizeAndDrainsTheStream(t *testing.T) {
	dir := t.TempDir()
	src := bytes.NewReader(make([]byte, 1<<20))
	path, err := Run(Config{Dir: dir, FileNamePattern: "core.%p", MaxBytes: 4096},
		[]string{"1", "2", "1", "2", "6", "0", "0", "0", "h", "e"}, src)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Size() != 4096 {
		t.Fatalf("size %d", st.Size())
	}
	if src.Len() != 0 {
		t.Fatalf("%d bytes left unread: the kernel would wait", src.Len())
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	good := []string{"1", "2", "1", "2", "6", "0", "0", "0", "h", "e"}
	for _, tc := range []struct {
		name, pattern string
		args          []string
	}{
		{"unknown specifier", "core.%z", good},
		{"too few arguments", "core.%e", []string{"1"}},
		{"hidden name", ".%e", good},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := strings.NewReader("data")
			if _, err := Run(Config{Dir: dir, FileNamePattern: tc.pattern}, tc.args, src); err == nil {
				t.Fatal("Run succeeded")
			}
			if src.Len() != 0 {
				t.Fatal("the stream was not drained: the kernel would wait")
			}
		})
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left %d files", len(entries))
	}
}

func TestInstall(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Dir: dir, FileNamePattern: "core.%e", MaxBytes: 10, MaxReceivers: 3}
	pattern, err := Install(fakeBinary(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if pattern != CorePattern(dir) {
		t.Fatalf("pattern %q", pattern)
	}
	st, err := os.Stat(filepath.Join(dir, InstallDir, BinaryName))
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed binary: %v %v", st, err)
	}
	if st, err := os.Stat(filepath.Join(dir, InstallDir)); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("install directory: %v %v", st, err)
	}
	inst, err := OpenInstallDir(dir)
	must(t, err)
	defer inst.Close()
	got, err := readConfig(inst)
	if err != nil || got != cfg {
		t.Fatalf("config %+v, %v", got, err)
	}
	for i := range 3 {
		if _, err := os.Stat(filepath.Join(dir, InstallDir, slotName(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Installing again (the next agent) replaces the files in place.
	if _, err := Install(fakeBinary(t), cfg); err != nil {
		t.Fatal(err)
	}
	must(t, Uninstall(dir))
	if _, err := os.Stat(filepath.Join(dir, InstallDir, BinaryName)); !os.IsNotExist(err) {
		t.Fatalf("binary after Uninstall: %v", err)
	}
}

// TestRunDoesNotFollowAPlantedSidecar is the attack of a pod that writes
// into the core directory: it plants the sidecar name of its next core as a
// symbolic link to a host file, or as a FIFO. The receiver, root in the
// host's namespaces, must neither write through the link nor block on the
// FIFO, and the sidecar it leaves is its own.
func TestRunDoesNotFollowAPlantedSidecar(t *testing.T) {
	for _, kind := range []string{"symlink", "fifo"} {
		t.Run(kind, func(t *testing.T) {
			dir, proc := t.TempDir(), t.TempDir()
			if err := os.MkdirAll(filepath.Join(proc, "4343"), 0o755); err != nil {
				t.Fatal(err)
			}
			cgroup := "0::/kubepods.slice/cri-containerd-" + strings.Repeat("cd", 32) + ".scope\n"
			if err := os.WriteFile(filepath.Join(proc, "4343", "cgroup"), []byte(cgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			host := filepath.Join(t.TempDir(), "host-file")
			if err := os.WriteFile(host, []byte("host secrets\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			side := filepath.Join(dir, ".core.web-0.server.4343.11.1767225600"+CgroupSuffix)
			var err error
			if kind == "symlink" {
				err = os.Symlink(host, side)
			} else {
				err = syscall.Mkfifo(side, 0o666)
			}
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := Run(Config{Dir: dir, FileNamePattern: "core.%h.%e.%P.%s.%t", ProcRoot: proc},
					[]string{"4343", "7", "4343", "7", "11", "1767225600", "0", "0", "web-0", "server"}, strings.NewReader("core"))
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the receiver blocked on a planted sidecar")
			}
			if got, _ := os.ReadFile(host); string(got) != "host secrets\n" {
				t.Fatalf("the receiver wrote through a planted link: %q", got)
			}
			fi, err := os.Lstat(side)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
				t.Fatalf("sidecar %v, %v: want the receiver's own 0600 file", fi, err)
			}
			if got, _ := os.ReadFile(side); string(got) != cgroup {
				t.Fatalf("sidecar %q", got)
			}
		})
	}
}

// TestRunMarksTheDumpMode: the kernel's %d reaches the file as an extended
// attribute only privileged processes can set or read.
func TestRunMarksTheDumpMode(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"privileged", []string{"1", "2", "1", "2", "11", "0", "1000", "1000", "2", "h", "su"}, "2"},
		{"user", []string{"1", "2", "1", "2", "11", "0", "1000", "1000", "1", "h", "app"}, "1"},
		{"a pattern without %d", []string{"1", "2", "1", "2", "11", "0", "1000", "1000", "h", "app"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, err := Run(Config{Dir: t.TempDir(), FileNamePattern: "core.%e.%p"}, tc.args, strings.NewReader("core"))
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 8)
			n, err := unix.Getxattr(path, DumpModeXattr, buf)
			switch {
			case tc.want == "" && !errors.Is(err, unix.ENODATA):
				t.Fatalf("xattr %q, %v; want none", buf[:max(n, 0)], err)
			case tc.want != "" && (err != nil || string(buf[:n]) != tc.want):
				t.Fatalf("xattr %q, %v; want %q", buf[:max(n, 0)], err, tc.want)
			}
		})
	}
}
