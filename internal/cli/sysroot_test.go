package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/storage"
)

// sharedLibraries lists the libraries prog loads, at their real paths (as
// a core's NT_FILE note names them), from ldd.
func sharedLibraries(t *testing.T, prog string) []string {
	t.Helper()
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", prog, err)
	}
	var libs []string
	for _, m := range regexp.MustCompile(`(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		real, err := filepath.EvalSymlinks(m[1])
		if err != nil {
			t.Fatal(err)
		}
		libs = append(libs, real)
	}
	if len(libs) < 2 {
		t.Fatalf("ldd found no libc and loader: %s", out)
	}
	return libs
}

// TestDownloadWithBinariesLaysOutASysrootGDBLoads stores the program and
// its libraries by build-id and the core as the dump, deletes the program,
// and runs the gdb command download --with-binaries prints: it shows the
// frames gdb shows with the program present.
func TestDownloadWithBinariesLaysOutASysrootGDBLoads(t *testing.T) {
	c := newRealCrash(t)
	work := t.TempDir()
	store, url := fileStore(t, work, "prod")
	progPath := "/app/bin/crashy"
	modules := []coredogv1.CrashModule{{Path: progPath, BuildID: c.buildID, State: coredogv1.ModuleStored}}
	putModule := func(path, file string) {
		id := buildIDOf(t, file)
		key, _ := buildid.KeyFor(id, buildid.Executable)
		if _, err := store.Stat(context.Background(), key); err != nil {
			putFile(t, store, key, file)
		}
		modules = append(modules, coredogv1.CrashModule{Path: path, BuildID: id, State: coredogv1.ModuleStored})
	}
	key, _ := buildid.KeyFor(c.buildID, buildid.Executable)
	putFile(t, store, key, c.prog)
	for _, lib := range sharedLibraries(t, c.prog) {
		putModule(lib, lib)
	}
	modules = append(modules, coredogv1.CrashModule{Path: "/usr/lib/libgone.so", BuildID: strings.Repeat("ef", 20), State: coredogv1.ModuleMissing})
	putFile(t, store, "team-a/core-x", c.core)
	core, err := os.ReadFile(c.core)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(c.prog); err != nil {
		t.Fatal(err)
	}
	cd := testDump("core-x", time.Minute, func(cd *coredogv1.CoreDump) {
		cd.Spec.Process.Executable, cd.Spec.Size = "crashy", int64(len(core))
		cd.Status.Storage = &coredogv1.StorageStatus{URL: strings.TrimSuffix(url, "prod") + "prod/team-a/core-x", Key: "team-a/core-x",
			Compression: coredogv1.CompressionNone, SHA256: sum(core)}
		cd.Status.Analysis = &coredogv1.CrashAnalysis{Outcome: coredogv1.AnalysisComplete, Modules: modules}
	})
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, now: time.Now, getenv: func(string) string { return "" },
		isTerminal: func(io.Writer) bool { return false }, openStore: storage.Open}
	dir := filepath.Join(work, "out dir")
	res, err := a.downloadWithBinaries(context.Background(), &cd, downloadOptions{output: dir, storageURL: url})
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	t.Logf("%s", stdout.String())
	if res.exe != filepath.Join(dir, "sysroot", progPath) {
		t.Errorf("executable %q", res.exe)
	}
	if !strings.Contains(stdout.String(), "Wrote "+itoa(len(modules)-1)+" of the "+itoa(len(modules)-1)+" modules") {
		t.Errorf("report: %s", stdout.String())
	}
	// The printed command is the one run, and it is quoted: the directory has a space.
	cmdline := res.gdbCommand()
	if !strings.Contains(stdout.String(), cmdline) || !strings.Contains(cmdline, "'set sysroot "+dir+"/sysroot'") {
		t.Errorf("printed command %q not in output:\n%s", cmdline, stdout.String())
	}
	args := res.gdbArgs()[1:]
	got, out := gdbRun(t, []string{"DEBUGINFOD_URLS="}, t.TempDir(), append([]string{"-batch", "-ex", "bt", "-ex", "info sharedlibrary"}, args...)...)
	if !slices.Equal(got, c.frames) {
		t.Errorf("frames with the sysroot:\n%q\nwith the program:\n%q", got, c.frames)
	}
	// The libraries came from the sysroot, not from this machine.
	for _, m := range modules[1 : len(modules)-1] {
		if !strings.Contains(out, filepath.Join(dir, "sysroot", m.Path)) {
			t.Errorf("gdb did not load %s from the sysroot:\n%s", m.Path, out)
		}
	}
}

// TestSysrootRefusesHostileModulePaths performs what a node could put into
// status.analysis.modules: paths that leave the sysroot, through .. or a
// symlink planted in it, duplicates, and files that are not what their
// build-id says.
func TestSysrootRefusesHostileModulePaths(t *testing.T) {
	c := newRealCrash(t)
	id := c.buildID
	prog, err := os.ReadFile(c.prog)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	root := filepath.Join(work, "sysroot")
	outside := filepath.Join(work, "outside")
	for _, d := range []string{root, outside} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// An absolute symlink, as if planted between mkdir and write.
	if err := os.Symlink(outside, filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	wrongID := strings.Repeat("0", 40)
	open := func(_ context.Context, bid string) (io.ReadCloser, error) {
		if bid == id || bid == wrongID {
			return io.NopCloser(bytes.NewReader(prog)), nil
		}
		return nil, errors.New("not stored")
	}
	mod := func(path, bid string) coredogv1.CrashModule {
		return coredogv1.CrashModule{Path: path, BuildID: bid, State: coredogv1.ModuleStored}
	}
	modules := []coredogv1.CrashModule{
		mod("../../etc/evil", id),
		mod("/../../etc/evil", id),
		mod("/usr/../../../etc/evil", id),
		mod("relative/evil", id),
		mod("/usr//evil", id),
		mod("/usr/./evil", id),
		mod("/usr/evil\x00.so", id),
		mod(`/usr\..\..\evil`, id),
		mod("/lib/evil.so", id),
		mod("/lib/sub/evil.so", id),
		mod("/usr/bin/app", id),
		mod("/usr/bin/app", id),
		mod("/usr/bin/app/below", id),
		mod("/usr/bin/wrong", wrongID),
		mod("/usr/bin/notid", "../../x"),
		{Path: "/usr/bin/missing", BuildID: id, State: coredogv1.ModuleMissing},
	}
	files := writeSysroot(context.Background(), root, modules, open)
	var written []string
	for _, f := range files {
		if f.err == nil {
			written = append(written, f.path)
		} else {
			t.Logf("%q: %v", f.module.Path, f.err)
		}
	}
	if want := []string{filepath.Join(root, "usr/bin/app")}; !slices.Equal(written, want) {
		t.Errorf("written %q, want %q", written, want)
	}
	if len(files) != len(modules)-1 {
		t.Errorf("%d results for %d stored modules", len(files), len(modules)-1)
	}
	entries, _ := os.ReadDir(outside)
	if len(entries) != 0 {
		t.Errorf("files were written outside the sysroot: %v", entries)
	}
	if _, err := os.Stat(filepath.Join(work, "etc")); err == nil {
		t.Error("an ../etc was created")
	}
	if _, err := os.Lstat(filepath.Join(root, "usr/bin/wrong")); err == nil {
		t.Error("a file with the wrong build-id was kept")
	}
}

func TestSysrootPath(t *testing.T) {
	for p, want := range map[string]string{
		"/usr/lib/libc.so.6": "usr/lib/libc.so.6",
		"/app":               "app",
		"/":                  "",
		"/a/../b":            "",
		"a/b":                "",
		"/a/b/":              "",
		"/a/..":              "",
	} {
		got, err := sysrootPath(p)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("sysrootPath(%q) = %q, %v; want %q", p, got, err, want)
		}
	}
}
