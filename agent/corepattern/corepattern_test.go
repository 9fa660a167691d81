package corepattern

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
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
