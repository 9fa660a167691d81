package corepattern

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/test/attacker"
)

// sysctlFile stands in for /proc/sys/kernel/core_pattern. Tests never touch
// the real one.
func sysctlFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "core_pattern")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testLogger(t *testing.T) logr.Logger {
	return funcr.New(func(prefix, args string) { t.Log(prefix, args) }, funcr.Options{})
}

// patternOf returns an absolute pattern of exactly n bytes.
func patternOf(n int) string {
	return "/" + strings.Repeat("c", n-1)
}

func TestPattern(t *testing.T) {
	tests := []struct {
		host, name string
		want       string
		wantErr    error
	}{
		{host: "/var/lib/coredog/cores", name: "core.%h.%e.%P.%s.%t", want: "/var/lib/coredog/cores/core.%h.%e.%P.%s.%t"},
		{host: "/cores/", name: "core", want: "/cores/core"},
		{host: "/a//b/../cores", name: "core", want: "/a/cores/core"},
		{host: "/", name: "core", want: "/core"},
		{host: "/" + strings.Repeat("d", 120), name: "core.", want: "/" + strings.Repeat("d", 120) + "/core."}, // 127 bytes
		{host: "/" + strings.Repeat("d", 120), name: "core.%", wantErr: ErrTooLong},                            // 128 bytes
		{host: "cores", name: "core", wantErr: ErrInvalid},
		{host: "", name: "core", wantErr: ErrInvalid},
		{host: "/cores", name: "", wantErr: ErrInvalid},
		{host: "/cores", name: "sub/core", wantErr: ErrInvalid},
		{host: "/cores", name: "core\n|/bin/sh", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		got, err := Pattern(tt.host, tt.name)
		if !errors.Is(err, tt.wantErr) || got != tt.want {
			t.Errorf("Pattern(%q, %q) = %q, %v; want %q, %v", tt.host, tt.name, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSetValidates(t *testing.T) {
	tests := []struct {
		name    string
		pattern string
		wantErr error
	}{
		{name: "127 bytes", pattern: patternOf(127)},
		{name: "typical", pattern: "/var/lib/coredog/cores/core.%h.%e.%P.%s.%t"},
		{name: "128 bytes", pattern: patternOf(128), wantErr: ErrTooLong},
		{name: "much too long", pattern: patternOf(4000), wantErr: ErrTooLong},
		{name: "pipe", pattern: "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h", wantErr: ErrPipe},
		{name: "relative", pattern: "core.%e.%p", wantErr: ErrInvalid},
		{name: "socket", pattern: "@/run/coredump.socket", wantErr: ErrInvalid},
		{name: "empty", pattern: "", wantErr: ErrInvalid},
		{name: "newline", pattern: "/cores/core\n", wantErr: ErrInvalid},
		{name: "embedded newline", pattern: "/cores/core\n|/bin/sh", wantErr: ErrInvalid},
		{name: "NUL", pattern: "/cores/co\x00re", wantErr: ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const original = "core\n"
			p := sysctlFile(t, original)
			m := New(p, testLogger(t))
			err := m.Set(tt.pattern)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Set = %v, want %v", err, tt.wantErr)
			}
			want := tt.pattern
			if err != nil {
				want = original
			}
			if got := readFile(t, p); got != want {
				t.Errorf("file = %q, want %q", got, want)
			}
		})
	}
}

func TestSetRestore(t *testing.T) {
	const ours = "/var/lib/coredog/cores/core.%h.%e.%P.%s.%t"
	tests := []struct {
		name     string
		original string // as the kernel shows it
		// sets are the patterns Set writes, in order.
		sets []string
		// restored is what the file must hold after Restore: the original
		// without the trailing newline the kernel adds when read.
		restored string
	}{
		{name: "kernel default", original: "core\n", sets: []string{ours}, restored: "core"},
		{name: "systemd pipe", original: "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n", sets: []string{ours},
			restored: "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h"},
		{name: "spaces kept", original: " /var/crash/core %e \n", sets: []string{ours}, restored: " /var/crash/core %e "},
		{name: "no trailing newline", original: "/var/crash/core", sets: []string{ours}, restored: "/var/crash/core"},
		{name: "127 bytes", original: patternOf(127) + "\n", sets: []string{ours}, restored: patternOf(127)},
		// Empty is written as a lone newline: the kernel ignores a zero-length write.
		{name: "empty", original: "\n", sets: []string{ours}, restored: "\n"},
		{name: "set twice", original: "core\n", sets: []string{ours, "/other/core.%p"}, restored: "core"},
		{name: "set the same pattern twice", original: "core\n", sets: []string{ours, ours}, restored: "core"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := sysctlFile(t, tt.original)
			m := New(p, testLogger(t))
			for _, s := range tt.sets {
				if err := m.Set(s); err != nil {
					t.Fatalf("Set(%q): %v", s, err)
				}
				if got := readFile(t, p); got != s {
					t.Fatalf("after Set file = %q, want %q", got, s)
				}
			}
			if err := m.Restore(); err != nil {
				t.Fatalf("Restore: %v", err)
			}
			if got := readFile(t, p); got != tt.restored {
				t.Errorf("after Restore file = %q, want %q", got, tt.restored)
			}
			cur, err := m.Current()
			if err != nil {
				t.Fatal(err)
			}
			if want := strings.TrimSuffix(tt.original, "\n"); cur != want {
				t.Errorf("Current = %q, want %q", cur, want)
			}
		})
	}
}

func TestRestoreIsIdempotent(t *testing.T) {
	t.Run("without Set", func(t *testing.T) {
		p := sysctlFile(t, "core\n")
		m := New(p, logr.Discard())
		if err := m.Restore(); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, p); got != "core\n" {
			t.Errorf("file = %q, want it untouched", got)
		}
		// Not even a missing file matters when there is nothing to restore.
		if err := New(filepath.Join(t.TempDir(), "missing"), logr.Discard()).Restore(); err != nil {
			t.Errorf("Restore without Set of a missing file: %v", err)
		}
	})
	t.Run("twice", func(t *testing.T) {
		p := sysctlFile(t, "core\n")
		m := New(p, logr.Discard())
		if err := m.Set("/cores/core"); err != nil {
			t.Fatal(err)
		}
		if err := m.Restore(); err != nil {
			t.Fatal(err)
		}
		// An administrator changes it after we are done; a second Restore
		// must not undo that.
		if err := os.WriteFile(p, []byte("admin"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := m.Restore(); err != nil {
			t.Fatal(err)
		}
		if got := readFile(t, p); got != "admin" {
			t.Errorf("file = %q after a second Restore, want %q", got, "admin")
		}
	})
	t.Run("set again after restore remembers afresh", func(t *testing.T) {
		p := sysctlFile(t, "core\n")
		m := New(p, logr.Discard())
		for _, s := range []string{"/a/core", "/b/core"} {
			if err := m.Set(s); err != nil {
				t.Fatal(err)
			}
			if err := m.Restore(); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, p); got != "core" {
				t.Errorf("file = %q, want %q", got, "core")
			}
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		p := sysctlFile(t, "core\n")
		m := New(p, logr.Discard())
		if err := m.Set("/cores/core"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if err := m.Restore(); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if got := readFile(t, p); got != "core" {
			t.Errorf("file = %q, want %q", got, "core")
		}
	})
}

func TestRestoreLeavesSomeoneElsesChange(t *testing.T) {
	p := sysctlFile(t, "core\n")
	m := New(p, testLogger(t))
	if err := m.Set("/cores/core"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("/admin/changed/it\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, p); got != "/admin/changed/it\n" {
		t.Errorf("file = %q, want the administrator's change kept", got)
	}
}

func TestSysctlErrors(t *testing.T) {
	readOnly := func(t *testing.T) string {
		if os.Geteuid() == 0 {
			t.Skip("root ignores file modes")
		}
		p := sysctlFile(t, "core\n")
		if err := os.Chmod(p, 0o444); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		wantIs  error
		content string // what a file that exists must still hold; "" = not checked
	}{
		{name: "missing", path: func(t *testing.T) string { return filepath.Join(t.TempDir(), "no", "core_pattern") }, wantIs: fs.ErrNotExist},
		{name: "read-only", path: readOnly, wantIs: fs.ErrPermission, content: "core\n"},
		{name: "a directory", path: func(t *testing.T) string { return t.TempDir() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.path(t)
			m := New(p, logr.Discard())
			err := m.Set("/cores/core")
			if err == nil {
				t.Fatal("Set succeeded")
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("Set error %v is not %v", err, tt.wantIs)
			}
			if msg := err.Error(); !strings.Contains(msg, "core_pattern") || !strings.Contains(msg, p) {
				t.Errorf("Set error %q does not name core_pattern and %s", msg, p)
			}
			if tt.content != "" {
				if got := readFile(t, p); got != tt.content {
					t.Errorf("file = %q, want %q", got, tt.content)
				}
			}
			// A failed Set has nothing to restore.
			if err := m.Restore(); err != nil {
				t.Errorf("Restore after a failed Set: %v", err)
			}
			if _, err := m.Current(); err == nil && tt.name == "missing" {
				t.Errorf("Current of a missing file succeeded")
			}
		})
	}
}

func TestCurrentRejectsHugeFiles(t *testing.T) {
	p := sysctlFile(t, strings.Repeat("x", maxRead+1))
	if _, err := New(p, logr.Discard()).Current(); err == nil {
		t.Error("Current read a file longer than any core_pattern")
	}
}

func FuzzPattern(f *testing.F) {
	f.Add("/var/lib/coredog/cores", "core.%h.%e.%P.%s.%t")
	f.Add("|/bin", "x")
	f.Add("/", "a\nb")
	f.Fuzz(func(t *testing.T, host, name string) {
		p, err := Pattern(host, name)
		if err != nil {
			return
		}
		if len(p) > maxLen || !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "\n\x00") || !strings.HasSuffix(p, "/"+name) {
			t.Errorf("Pattern(%q, %q) = %q", host, name, p)
		}
	})
}

func TestSetPipe(t *testing.T) {
	sysctl := filepath.Join(t.TempDir(), "core_pattern")
	if err := os.WriteFile(sysctl, []byte("core\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := New(sysctl, logr.Discard())
	for _, bad := range []string{"/no/pipe %p", "|relative %p", "|/x " + strings.Repeat("a", 130), "|/x\n%p"} {
		if err := m.SetPipe(bad); err == nil {
			t.Fatalf("SetPipe(%q) succeeded", bad)
		}
	}
	want := "|/var/lib/coredog/cores/.coredog/agent receive %P %p"
	if err := m.SetPipe(want); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Current(); got != want {
		t.Fatalf("core_pattern = %q", got)
	}
	if err := m.Restore(); err != nil {
		t.Fatal(err)
	}
	if got, _ := m.Current(); got != "core" {
		t.Fatalf("restored %q", got)
	}
}

func TestStateSurvivesAKilledAgent(t *testing.T) {
	dir := t.TempDir()
	sysctl := filepath.Join(dir, "core_pattern")
	state := filepath.Join(dir, "state")
	if err := os.WriteFile(sysctl, []byte("|/usr/lib/systemd/systemd-coredump %P\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const ours = "/var/lib/coredog/cores/core.%e.%p"
	first := New(sysctl, logr.Discard()).WithState(state)
	if err := first.Set(ours); err != nil {
		t.Fatal(err)
	}
	// The first agent is killed: no Restore. The next one starts and finds
	// its own pattern in place.
	second := New(sysctl, logr.Discard()).WithState(state)
	if err := second.Set(ours); err != nil {
		t.Fatal(err)
	}
	if err := second.Restore(); err != nil {
		t.Fatal(err)
	}
	if got, _ := second.Current(); got != "|/usr/lib/systemd/systemd-coredump %P" {
		t.Fatalf("restored %q, want the administrator's value", got)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state file left behind: %v", err)
	}
}

// TestRestoreRefusesAPlantedOriginal is the attack of an unprivileged
// process on a node whose core directory is world-writable: it creates
// <hostPath>/.coredog before any agent, plants core_pattern.original piping
// to its own program, and waits for an agent that was killed to be replaced.
// The next agent must not take the planted value, so that its Restore never
// makes the kernel run that program as root.
func TestRestoreRefusesAPlantedOriginal(t *testing.T) {
	host := attacker.SharedDir(t)
	evil := filepath.Join(host, "evil")
	planted := "|" + evil + " %P"
	attacker.Run(t, fmt.Sprintf(`mkdir -m 0777 %[1]s/.coredog
printf '#!/bin/sh\nid > %[1]s/pwned\n' > %[2]s
chmod 0755 %[2]s
printf '%%s' '%[3]s' > %[1]s/.coredog/core_pattern.original`, host, evil, planted))

	// The killed agent left its pattern in the kernel.
	const ours = "|/var/lib/coredog/cores/.coredog/agent receive %P"
	sysctl := sysctlFile(t, ours+"\n")
	m := New(sysctl, testLogger(t)).WithState(filepath.Join(host, ".coredog", "core_pattern.original"))
	setErr := m.SetPipe(ours)
	restoreErr := m.Restore()
	got := readFile(t, sysctl)
	if strings.TrimSpace(got) == planted {
		t.Fatalf("the agent restored the planted core_pattern %q", got)
	}
	if setErr == nil || !errors.Is(setErr, hostdir.ErrUnsafe) {
		t.Errorf("SetPipe = %v, want a refusal of the planted directory", setErr)
	}
	t.Logf("SetPipe: %v; Restore: %v", setErr, restoreErr)
}

// TestRestoreRefusesAHelperOthersCanChange: the value to restore pipes to a
// program that someone other than root owns or can replace. Restoring it
// would make the kernel run that program as root on the next crash, so the
// managed pattern stays and Restore says why.
func TestRestoreRefusesAHelperOthersCanChange(t *testing.T) {
	cases := []struct {
		name string
		// attack prepares <dir>; the helper is <dir>/bin/helper.
		attack string
		root   func(t *testing.T, dir string)
		safe   bool
	}{
		{name: "helper owned by uid 1000", attack: `mkdir -m 0755 %[1]s/bin; printf '#!/bin/sh\n' > %[1]s/bin/helper; chmod 0755 %[1]s/bin/helper`},
		{name: "root's helper in a directory uid 1000 owns", attack: `mkdir -m 0755 %[1]s/bin`, root: func(t *testing.T, dir string) {
			must(t, os.WriteFile(filepath.Join(dir, "bin", "helper"), []byte("#!/bin/sh\n"), 0o755))
		}},
		{name: "root's helper that others may write", root: func(t *testing.T, dir string) {
			must(t, os.Mkdir(filepath.Join(dir, "bin"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "bin", "helper"), []byte("#!/bin/sh\n"), 0o755))
			must(t, os.Chmod(filepath.Join(dir, "bin", "helper"), 0o757))
		}},
		{name: "a link uid 1000 owns to root's helper", attack: `ln -s /usr/bin/true %[1]s/bin`},
		{name: "root's directory in a non-sticky world-writable one", root: func(t *testing.T, dir string) {
			must(t, os.Chmod(dir, 0o777))
			must(t, os.Mkdir(filepath.Join(dir, "bin"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "bin", "helper"), []byte("#!/bin/sh\n"), 0o755))
		}},
		{name: "root's helper, root's directories", safe: true, root: func(t *testing.T, dir string) {
			must(t, os.Mkdir(filepath.Join(dir, "bin"), 0o755))
			must(t, os.WriteFile(filepath.Join(dir, "bin", "helper"), []byte("#!/bin/sh\n"), 0o755))
		}},
		{name: "root's link to root's helper", safe: true, root: func(t *testing.T, dir string) {
			must(t, os.Symlink("/usr/bin", filepath.Join(dir, "bin")))
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := attacker.SharedDir(t)
			if tc.attack != "" {
				attacker.Run(t, fmt.Sprintf(tc.attack, dir))
			}
			if tc.root != nil {
				tc.root(t, dir)
			}
			helper := filepath.Join(dir, "bin", "helper")
			if tc.name == "a link uid 1000 owns to root's helper" || tc.name == "root's link to root's helper" {
				helper = filepath.Join(dir, "bin", "true")
			}
			original := "|" + helper + " %P %s"
			sysctl := sysctlFile(t, original+"\n")
			m := New(sysctl, testLogger(t))
			const ours = "/var/lib/coredog/cores/core.%e.%p"
			must(t, m.Set(ours))
			err := m.Restore()
			got := strings.TrimSpace(readFile(t, sysctl))
			if tc.safe {
				if err != nil || got != original {
					t.Fatalf("Restore = %v, core_pattern %q; want %q restored", err, got, original)
				}
				return
			}
			if !errors.Is(err, ErrUnsafeHelper) || got != ours {
				t.Fatalf("Restore = %v, core_pattern %q; want ErrUnsafeHelper and %q kept", err, got, ours)
			}
		})
	}
}

// TestSetPipeSetsAndRestoresCorePipeLimit: a pipe pattern comes with a
// non-zero core_pipe_limit, so that /proc/<pid> stays while the receiver
// runs; both are restored, also by the agent after one that was killed, and
// a value someone else wrote since is left.
func TestSetPipeSetsAndRestoresCorePipeLimit(t *testing.T) {
	const ours = "|/var/lib/coredog/cores/.coredog/agent receive %P"
	dir := t.TempDir()
	pattern, limit := filepath.Join(dir, "core_pattern"), filepath.Join(dir, "core_pipe_limit")
	must(t, os.WriteFile(pattern, []byte("core\n"), 0o644))
	must(t, os.WriteFile(limit, []byte("0\n"), 0o644))
	state := filepath.Join(t.TempDir(), "core_pattern.original")

	first := New(pattern, testLogger(t)).WithState(state).WithPipeLimit(limit)
	must(t, first.SetPipe(ours))
	if got := readFile(t, limit); got != strconv.Itoa(PipeLimit) {
		t.Fatalf("core_pipe_limit = %q, want %d", got, PipeLimit)
	}
	// Killed: the next agent finds both of its values in place.
	second := New(pattern, testLogger(t)).WithPipeLimit(limit).WithState(state)
	must(t, second.SetPipe(ours))
	must(t, second.Restore())
	if got := readFile(t, limit); got != "0" {
		t.Fatalf("core_pipe_limit restored to %q, want 0", got)
	}
	if got := readFile(t, pattern); got != "core" {
		t.Fatalf("core_pattern restored to %q", got)
	}

	// Someone else changes core_pipe_limit meanwhile: theirs stays.
	third := New(pattern, testLogger(t)).WithState(state).WithPipeLimit(limit)
	must(t, third.SetPipe(ours))
	must(t, os.WriteFile(limit, []byte("4\n"), 0o644))
	must(t, third.Restore())
	if got := readFile(t, limit); got != "4\n" {
		t.Fatalf("core_pipe_limit = %q, want the administrator's 4 kept", got)
	}

	// A missing core_pipe_limit fails SetPipe before core_pattern is touched.
	fourth := New(pattern, testLogger(t)).WithPipeLimit(filepath.Join(dir, "missing"))
	if err := fourth.SetPipe(ours); err == nil {
		t.Fatal("SetPipe succeeded without a core_pipe_limit")
	}
	if got := readFile(t, pattern); got != "core" {
		t.Fatalf("core_pattern = %q after a failed SetPipe, want it untouched", got)
	}
	// A core_pattern that cannot be written puts core_pipe_limit back.
	fifth := New(filepath.Join(dir, "no", "core_pattern"), testLogger(t)).WithPipeLimit(limit)
	if err := fifth.SetPipe(ours); err == nil {
		t.Fatal("SetPipe succeeded without a core_pattern")
	}
	if got := readFile(t, limit); got != "4" {
		t.Fatalf("core_pipe_limit = %q after a failed SetPipe, want 4 put back", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
