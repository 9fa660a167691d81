package detect

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr/testr"
	clocktesting "k8s.io/utils/clock/testing"
)

// harness runs a Detector on a temp dir and collects what it emits.
type harness struct {
	t   *testing.T
	dir string
	d   *Detector

	mu    sync.Mutex
	files []File
	modes []string
	found map[Source]int
}

// newHarness makes a temp dir, lets setup fill it and adjust the options,
// and returns a harness ready to start.
func newHarness(t *testing.T, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, dir: t.TempDir(), found: map[Source]int{}}
	opts.Dir = h.dir
	if opts.SettleTime == 0 {
		opts.SettleTime = 300 * time.Millisecond
	}
	opts.Logger = testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	opts.OnMode = func(mode string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.modes = append(h.modes, mode)
	}
	opts.OnFound = func(src Source) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.found[src]++
	}
	d, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.d = d
	return h
}

// start runs the detector until the test ends, then checks that Run
// returned nil.
func (h *harness) start() {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan File)
	done := make(chan error, 1)
	go func() { done <- h.d.Run(ctx, out) }()
	go func() {
		for {
			select {
			case f := <-out:
				h.mu.Lock()
				h.files = append(h.files, f)
				h.mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	h.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				h.t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(5 * time.Second):
			h.t.Errorf("Run did not return after cancel")
		}
	})
	// The mode is published once the first scan is done; wait for it so
	// that files made after start are not found by that scan instead.
	h.waitUntil("mode decided", 5*time.Second, func() bool { return h.d.Mode() != "" })
}

func (h *harness) path(rel string) string { return filepath.Join(h.dir, filepath.FromSlash(rel)) }

func (h *harness) write(rel string, data string) string {
	h.t.Helper()
	p := h.path(rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

func (h *harness) emitted() []File {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]File(nil), h.files...)
}

func (h *harness) waitUntil(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("Timed out after %s waiting for %s; emitted %v", timeout, what, h.emitted())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor waits until n files have been emitted and returns them.
func (h *harness) waitFor(n int, timeout time.Duration) []File {
	h.t.Helper()
	h.waitUntil(strconv.Itoa(n)+" files", timeout, func() bool { return len(h.emitted()) >= n })
	return h.emitted()
}

// settleFor waits d, then checks that exactly the files in want (by RelPath)
// were emitted, each once. It proves absence: nothing more came in d.
func (h *harness) settleFor(d time.Duration, want ...string) []File {
	h.t.Helper()
	time.Sleep(d)
	got := h.emitted()
	count := map[string]int{}
	for _, f := range got {
		count[f.RelPath]++
	}
	for _, rel := range want {
		if count[rel] != 1 {
			h.t.Errorf("%s emitted %d times, want once", rel, count[rel])
		}
		delete(count, rel)
	}
	for rel, n := range count {
		h.t.Errorf("%s emitted %d times, want never", rel, n)
	}
	return got
}

func checkIdentity(t *testing.T, f File) {
	t.Helper()
	fi, err := os.Lstat(f.Path)
	if err != nil {
		t.Fatalf("Lstat %s: %v", f.Path, err)
	}
	if want := observationOf(fi).identity(); f.Identity != want {
		t.Errorf("%s emitted with identity %s, file now has %s", f.RelPath, f.Identity, want)
	}
	if !f.ModTime.Equal(fi.ModTime()) {
		t.Errorf("%s emitted with mtime %s, file has %s", f.RelPath, f.ModTime, fi.ModTime())
	}
	if f.CompleteAt.Before(f.SeenAt) {
		t.Errorf("%s complete at %s, before it was seen at %s", f.RelPath, f.CompleteAt, f.SeenAt)
	}
}

func TestNewValidates(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "valid", opts: Options{Dir: dir, SettleTime: time.Second}},
		{name: "valid with proc root", opts: Options{Dir: dir, SettleTime: time.Second, ProcRoot: dir}},
		{name: "no dir", opts: Options{SettleTime: time.Second}, wantErr: "Dir is required"},
		{name: "missing dir", opts: Options{Dir: filepath.Join(dir, "nope"), SettleTime: time.Second}, wantErr: "no such file"},
		{name: "dir is a file", opts: Options{Dir: file, SettleTime: time.Second}, wantErr: "not a directory"},
		{name: "no settle time", opts: Options{Dir: dir}, wantErr: "SettleTime"},
		{name: "negative poll", opts: Options{Dir: dir, SettleTime: time.Second, PollInterval: -time.Second}, wantErr: "PollInterval"},
		{name: "missing proc root", opts: Options{Dir: dir, SettleTime: time.Second, ProcRoot: filepath.Join(dir, "proc")}, wantErr: "ProcRoot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("New error = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRunRejectsMisuse(t *testing.T) {
	d, err := New(Options{Dir: t.TempDir(), SettleTime: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Run(ctx, nil); err == nil {
		t.Error("Run with a nil channel: want an error")
	}
	if err := d.Run(ctx, make(chan File)); err != nil {
		t.Errorf("Run with a cancelled context = %v, want nil", err)
	}
	if err := d.Run(ctx, make(chan File)); err == nil {
		t.Error("second Run: want an error")
	}
}

func TestRunFindsFilesPresentAtStart(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	h.write("core.a.1", "first")
	h.write("ns/pod/core.b.2", "second")
	h.start()
	h.waitFor(2, 5*time.Second)
	got := h.settleFor(700*time.Millisecond, "core.a.1", "ns/pod/core.b.2")
	for _, f := range got {
		if f.Source != SourceRescan {
			t.Errorf("%s source = %s, want %s", f.RelPath, f.Source, SourceRescan)
		}
		if f.Path != h.path(f.RelPath) {
			t.Errorf("Path = %s, want %s", f.Path, h.path(f.RelPath))
		}
		checkIdentity(t, f)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.found[SourceRescan] != 2 {
		t.Errorf("OnFound(Rescan) called %d times, want 2", h.found[SourceRescan])
	}
}

func TestRunFindsNewFileByWatch(t *testing.T) {
	t.Parallel()
	// No polling: only the watch can find the file.
	h := newHarness(t, Options{})
	h.start()
	if m := h.d.Mode(); m != ModeWatch {
		t.Fatalf("Mode = %q, want %q", m, ModeWatch)
	}
	created := time.Now()
	h.write("core.new.7", "dump")
	got := h.waitFor(1, 5*time.Second)
	f := got[0]
	if f.Source != SourceWatch || f.RelPath != "core.new.7" || f.Identity.Size != 4 {
		t.Errorf("emitted %+v, want core.new.7 of 4 bytes via Watch", f)
	}
	if f.CompleteAt.Sub(created) < 300*time.Millisecond {
		t.Errorf("complete %s after creation, before the settle time", f.CompleteAt.Sub(created))
	}
	checkIdentity(t, f)
	h.settleFor(500*time.Millisecond, "core.new.7")
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.modes) != 1 || h.modes[0] != ModeWatch {
		t.Errorf("OnMode calls = %v, want [watch]", h.modes)
	}
}

func TestRunWatchesNewSubdirectories(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{})
	h.start()
	// The file lands before the detector can watch the new directory, so
	// only the rescan of the new directory finds it.
	h.write("sub/core.x.1", "one")
	h.write("a/b/c/core.y.2", "two")
	h.waitFor(2, 5*time.Second)
	// A directory created later is watched too.
	if err := os.Mkdir(h.path("later"), 0o755); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	h.write("later/core.z.3", "three")
	h.waitFor(3, 5*time.Second)
	for _, f := range h.settleFor(500*time.Millisecond, "sub/core.x.1", "a/b/c/core.y.2", "later/core.z.3") {
		if f.Source != SourceWatch {
			t.Errorf("%s source = %s, want %s", f.RelPath, f.Source, SourceWatch)
		}
	}
}

func TestRunWaitsForPausedWriter(t *testing.T) {
	t.Parallel()
	// The pause is well past several rechecks and half the settle time, but
	// shorter than it; a detector that judged on silence between events, or
	// on a fraction of the settle time, would emit the first half.
	const settle = time.Second
	const pause = 600 * time.Millisecond
	h := newHarness(t, Options{SettleTime: settle, PollInterval: 200 * time.Millisecond})
	h.start()
	f, err := os.Create(h.path("core.slow.9"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := strings.Repeat("x", 4096)
	if _, err := f.WriteString(chunk); err != nil {
		t.Fatal(err)
	}
	time.Sleep(pause)
	if n := len(h.emitted()); n != 0 {
		t.Fatalf("%d files emitted during the pause", n)
	}
	if _, err := f.WriteString(chunk); err != nil {
		t.Fatal(err)
	}
	lastWrite := time.Now()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	got := h.waitFor(1, 5*time.Second)
	if got[0].Identity.Size != 8192 {
		t.Errorf("emitted with size %d, want the final 8192", got[0].Identity.Size)
	}
	if waited := got[0].CompleteAt.Sub(lastWrite); waited < settle {
		t.Errorf("complete %s after the last write, want at least the settle time %s", waited, settle)
	}
	checkIdentity(t, got[0])
	h.settleFor(pause, "core.slow.9")
}

func TestRunPollOnly(t *testing.T) {
	t.Parallel()
	const poll = 200 * time.Millisecond
	h := newHarness(t, Options{DisableWatch: true, PollInterval: poll})
	h.start()
	if m := h.d.Mode(); m != ModePoll {
		t.Fatalf("Mode = %q, want %q", m, ModePoll)
	}
	created := time.Now()
	h.write("core.poll.5", "polled")
	f := h.waitFor(1, 5*time.Second)[0]
	if f.Source != SourcePoll {
		t.Errorf("source = %s, want %s", f.Source, SourcePoll)
	}
	// Generous slack over the interval: the machine may be busy.
	if late := f.SeenAt.Sub(created); late > poll+500*time.Millisecond {
		t.Errorf("seen %s after creation, want within about the poll interval %s", late, poll)
	}
	h.settleFor(500*time.Millisecond, "core.poll.5")
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.modes) != 1 || h.modes[0] != ModePoll {
		t.Errorf("OnMode calls = %v, want [poll]", h.modes)
	}
}

func TestRunFallsBackToPollingWhenWatchFails(t *testing.T) {
	t.Parallel()
	// PollInterval 0 would mean no polling at all if watching worked.
	h := newHarness(t, Options{})
	h.d.newWatcher = func() (*fsnotify.Watcher, error) {
		return nil, errors.New("inotify_init1: too many open files")
	}
	h.d.fallbackPoll = 200 * time.Millisecond
	h.start()
	if m := h.d.Mode(); m != ModePoll {
		t.Fatalf("Mode = %q, want %q", m, ModePoll)
	}
	h.write("core.fallback.1", "x")
	f := h.waitFor(1, 5*time.Second)[0]
	if f.Source != SourcePoll {
		t.Errorf("source = %s, want %s", f.Source, SourcePoll)
	}
}

func TestRunIgnoresWhatIsNotARegularFile(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "core.outside.1"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	makers := []struct {
		name string
		make func(h *harness, suffix string)
	}{
		{"symlink to /etc/passwd", func(h *harness, s string) { mustOK(h.t, os.Symlink("/etc/passwd", h.path("core.link."+s))) }},
		{"symlink to a directory", func(h *harness, s string) { mustOK(h.t, os.Symlink(outside, h.path("core.dirlink."+s))) }},
		{"fifo", func(h *harness, s string) { mustOK(h.t, syscall.Mkfifo(h.path("core.fifo."+s), 0o600)) }},
		{"unix socket", func(h *harness, s string) {
			p := h.path("core.sock." + s)
			if len(p) >= 100 {
				// Too long for sun_path under a long TMPDIR: a socket
				// inode without a listener looks the same to Lstat.
				mustOK(h.t, syscall.Mknod(p, syscall.S_IFSOCK|0o600, 0))
				return
			}
			l, err := net.Listen("unix", p)
			mustOK(h.t, err)
			h.t.Cleanup(func() { l.Close() })
		}},
		{"directory named like a core", func(h *harness, s string) { mustOK(h.t, os.Mkdir(h.path("core.123."+s), 0o755)) }},
		{"dotfile", func(h *harness, s string) { h.write(".core.tmp."+s, "partial") }},
		{"file in a dot directory", func(h *harness, s string) { h.write(".staging."+s+"/core.1", "partial") }},
	}
	// Each way of finding files on its own, and both together: a periodic
	// rescan would otherwise hide a file the watch path wrongly tracked.
	modes := []struct {
		name string
		opts Options
	}{
		{name: "watch only", opts: Options{}},
		{name: "poll only", opts: Options{DisableWatch: true, PollInterval: 200 * time.Millisecond}},
		{name: "watch and poll", opts: Options{PollInterval: 200 * time.Millisecond}},
	}
	for _, mode := range modes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, mode.opts)
			for _, m := range makers {
				m.make(h, "before")
			}
			h.start()
			for _, m := range makers {
				m.make(h, "after")
			}
			// A real core made last: once it is out, the others had
			// every chance.
			h.write("core.real.1", "real")
			h.waitFor(1, 5*time.Second)
			h.settleFor(600*time.Millisecond, "core.real.1")
		})
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestRunEmitsEmptyFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	h.start()
	h.write("core.empty.3", "")
	f := h.waitFor(1, 5*time.Second)[0]
	if f.Identity.Size != 0 {
		t.Errorf("size = %d, want 0", f.Identity.Size)
	}
	checkIdentity(t, f)
	h.settleFor(600*time.Millisecond, "core.empty.3")
}

func TestRunDropsFileDeletedBeforeComplete(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{SettleTime: 500 * time.Millisecond, PollInterval: 200 * time.Millisecond})
	h.start()
	p := h.write("core.gone.4", "short-lived")
	time.Sleep(200 * time.Millisecond) // tracked by now, not yet complete
	mustOK(t, os.Remove(p))
	h.write("core.kept.4", "kept")
	h.waitFor(1, 5*time.Second)
	h.settleFor(500*time.Millisecond, "core.kept.4")
}

func TestRunForgetThenNewFileAtSamePath(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	h.start()
	p := h.write("core.again.1", "first dump")
	first := h.waitFor(1, 5*time.Second)[0]
	mustOK(t, os.Remove(p))
	h.d.Forget(p)
	h.write("core.again.1", "second")
	got := h.waitFor(2, 5*time.Second)
	second := got[1]
	if second.Path != first.Path || second.Identity == first.Identity || second.Identity.Size != 6 {
		t.Errorf("second emission %+v, want %s anew with 6 bytes", second, first.Path)
	}
	checkIdentity(t, second)
	time.Sleep(500 * time.Millisecond)
	if n := len(h.emitted()); n != 2 {
		t.Errorf("%d emissions, want 2", n)
	}
}

func TestRunEmitsGrownFileAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	h.start()
	p := h.write("core.grow.1", "part")
	first := h.waitFor(1, 5*time.Second)[0]
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	mustOK(t, err)
	_, err = f.WriteString(" and more")
	mustOK(t, err)
	mustOK(t, f.Close())
	second := h.waitFor(2, 5*time.Second)[1]
	if second.Identity.Inode != first.Identity.Inode || second.Identity.Size != 13 {
		t.Errorf("second emission %+v, want the same inode with 13 bytes", second)
	}
	if first.Previous != nil || second.Previous == nil || *second.Previous != first.Identity {
		t.Errorf("Previous: first %v, second %v; want none, then the first's identity %s", first.Previous, second.Previous, first.Identity)
	}
	checkIdentity(t, second)
}

// declaring says every file will end up want bytes long, as a core's
// program headers do, and counts how often it was asked.
func declaring(want int64, asked *atomic.Int32) func(string) (int64, bool) {
	return func(string) (int64, bool) {
		asked.Add(1)
		return want, true
	}
}

// TestRunWaitsForDeclaredSize: without a process to check, a writer that
// pauses for twice the settle time halfway through a file that says how long
// it will be is waited for, and the file is emitted once, whole.
func TestRunWaitsForDeclaredSize(t *testing.T) {
	t.Parallel()
	const settle = 300 * time.Millisecond
	var asked atomic.Int32
	// The cut quiet time is far past the pause, so that a slow machine
	// cannot make this test take the first half as cut.
	h := newHarness(t, Options{SettleTime: settle, CutQuietTime: time.Minute, PollInterval: 100 * time.Millisecond, DeclaredSize: declaring(8192, &asked)})
	h.start()
	f, err := os.Create(h.path("core.slow.10"))
	mustOK(t, err)
	defer f.Close()
	chunk := strings.Repeat("x", 4096)
	_, err = f.WriteString(chunk)
	mustOK(t, err)
	time.Sleep(2 * settle)
	if n := len(h.emitted()); n != 0 {
		t.Fatalf("%d files emitted during the pause", n)
	}
	if asked.Load() == 0 {
		t.Fatal("the declared size was never asked for")
	}
	_, err = f.WriteString(chunk)
	mustOK(t, err)
	mustOK(t, f.Close())
	got := h.waitFor(1, 10*time.Second)
	if got[0].Identity.Size != 8192 || got[0].Cut || got[0].Previous != nil {
		t.Errorf("emitted %+v, want the whole 8192 bytes, not cut, superseding nothing", got[0])
	}
	before := asked.Load()
	h.settleFor(2*settle, "core.slow.10")
	if after := asked.Load(); after != before {
		t.Errorf("the declared size of a file judged complete was read %d more times", after-before)
	}
}

// TestRunTakesShortFileAsCutAfterCutQuietTime: a file that stays shorter
// than it declares is emitted, marked cut, once it has been still for the
// cut quiet time, and not before.
func TestRunTakesShortFileAsCutAfterCutQuietTime(t *testing.T) {
	t.Parallel()
	const settle, cutQuiet = 200 * time.Millisecond, 1500 * time.Millisecond
	var asked atomic.Int32
	h := newHarness(t, Options{SettleTime: settle, CutQuietTime: cutQuiet, DeclaredSize: declaring(1<<20, &asked)})
	h.start()
	h.write("core.cut.11", "only the start")
	written := time.Now()
	got := h.waitFor(1, 20*time.Second)
	if !got[0].Cut || got[0].Identity.Size != int64(len("only the start")) {
		t.Errorf("emitted %+v, want the file as it is, marked cut", got[0])
	}
	if waited := got[0].CompleteAt.Sub(written); waited < cutQuiet {
		t.Errorf("emitted %s after the write, want at least the cut quiet time %s", waited, cutQuiet)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("declared size read %d times for one unchanging file, want once", n)
	}
}

// TestRunDeclaredSizeIsNotAskedWhenTheProcessDecides: with the dumping
// process to check, the file is never read.
func TestRunDeclaredSizeIsNotAskedWhenTheProcessDecides(t *testing.T) {
	t.Parallel()
	proc := t.TempDir()
	var asked atomic.Int32
	h := newHarness(t, Options{ProcRoot: proc, DeclaredSize: declaring(1<<20, &asked),
		HostPID: func(string) (int64, bool) { return 4242, true }})
	h.start()
	h.write("core.pid.12", "short, and the process is gone")
	got := h.waitFor(1, 10*time.Second)
	if got[0].Cut || asked.Load() != 0 {
		t.Errorf("emitted %+v after %d reads of the declared size; want no reads, not cut", got[0], asked.Load())
	}
}

func TestRunManyFilesAtOnce(t *testing.T) {
	t.Parallel()
	const n = 500
	h := newHarness(t, Options{PollInterval: 200 * time.Millisecond})
	h.start()
	want := make([]string, n)
	for i := range n {
		want[i] = "core.many." + strconv.Itoa(i)
		h.write(want[i], strconv.Itoa(i))
	}
	h.waitFor(n, 10*time.Second)
	h.settleFor(600*time.Millisecond, want...)
}

func TestRunWaitsForDumpingProcess(t *testing.T) {
	t.Parallel()
	proc := t.TempDir()
	pidDir := filepath.Join(proc, "4242")
	mustOK(t, os.Mkdir(pidDir, 0o555))
	var seen atomic.Int32
	var seenLate atomic.Bool
	h := newHarness(t, Options{
		PollInterval: 200 * time.Millisecond,
		ProcRoot:     proc,
		HostPID: func(name string) (int64, bool) {
			pid, err := strconv.ParseInt(strings.TrimPrefix(name, "core."), 10, 64)
			return pid, err == nil
		},
		OnSeen: func(path string) {
			// The agent reads the dumping process's cgroup here, so the
			// process must still be there.
			if _, err := os.Stat(pidDir); err != nil {
				seenLate.Store(true)
			}
			seen.Add(1)
		},
	})
	h.start()
	h.write("core.4242", "dump")
	// Three times the settle time: without the PID check it would be out.
	time.Sleep(900 * time.Millisecond)
	if n := len(h.emitted()); n != 0 {
		t.Fatalf("%d files emitted while the dumping process exists", n)
	}
	mustOK(t, os.Remove(pidDir))
	gone := time.Now()
	f := h.waitFor(1, 5*time.Second)[0]
	if waited := f.CompleteAt.Sub(gone); waited > time.Second {
		t.Errorf("complete %s after the process went, want soon", waited)
	}
	checkIdentity(t, f)
	h.settleFor(300*time.Millisecond, "core.4242")
	if seen.Load() != 1 || seenLate.Load() {
		t.Errorf("OnSeen called %d times (want 1), after the process was gone: %v", seen.Load(), seenLate.Load())
	}
}

func TestRunJudgesFileRenamedInWholeAtOnce(t *testing.T) {
	t.Parallel()
	// The clock never moves, so no recheck or poll ever fires: only the
	// watch event can make the file complete.
	fc := clocktesting.NewFakeClock(time.Now())
	h := newHarness(t, Options{
		ProcRoot: t.TempDir(), // no PID directory: the dumping process is gone
		HostPID: func(name string) (int64, bool) {
			pid, err := strconv.ParseInt(strings.TrimPrefix(name, "core."), 10, 64)
			return pid, err == nil
		},
		Clock: fc,
	})
	h.start()
	staged := filepath.Join(t.TempDir(), "core.4242")
	mustOK(t, os.WriteFile(staged, []byte("dump"), 0o600))
	old := fc.Now().Add(-time.Second)
	mustOK(t, os.Chtimes(staged, old, old))
	mustOK(t, os.Rename(staged, h.path("core.4242")))
	f := h.waitFor(1, 5*time.Second)[0]
	if f.Source != SourceWatch || f.RelPath != "core.4242" || f.Identity.Size != 4 {
		t.Errorf("emitted %+v, want core.4242 of 4 bytes via Watch", f)
	}
	checkIdentity(t, f)
}
