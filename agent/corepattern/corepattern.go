package corepattern

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/go-logr/logr"
)

// DefaultSysctlPath is where the kernel exposes core_pattern.
const DefaultSysctlPath = "/proc/sys/kernel/core_pattern"

// maxLen is the longest pattern the kernel keeps: core_pattern is a
// CORENAME_MAX_SIZE (128) buffer including the terminating NUL, and a longer
// write is silently truncated, which would send cores to some other file.
const maxLen = 127

// maxRead bounds what read reads; a real core_pattern is under 128 bytes,
// so anything longer is not a core_pattern file.
const maxRead = 4096

var (
	// ErrTooLong is returned for a pattern of 128 bytes or more.
	ErrTooLong = errors.New("core_pattern is longer than the kernel's 127 bytes")
	// ErrPipe is returned for a pattern that starts with '|': piping cores to
	// a helper is the administrator's business, not the agent's.
	ErrPipe = errors.New("core_pattern pipes to a program")
	// ErrInvalid is returned for a pattern that is not an absolute path, or
	// holds a newline or other control character.
	ErrInvalid = errors.New("invalid core_pattern")
)

// Pattern joins hostPath and fileNamePattern into the core_pattern the agent
// manages and validates it as Set would.
func Pattern(hostPath, fileNamePattern string) (string, error) {
	if !path.IsAbs(hostPath) {
		return "", fmt.Errorf("host path %q is not absolute: %w", hostPath, ErrInvalid)
	}
	// The kernel creates no directories, and the agent parses base names with
	// fileNamePattern, so a '/' in it could never produce a name we match.
	if fileNamePattern == "" || strings.Contains(fileNamePattern, "/") {
		return "", fmt.Errorf("file name pattern %q must be a non-empty file name without '/': %w", fileNamePattern, ErrInvalid)
	}
	p := strings.TrimSuffix(path.Clean(hostPath), "/") + "/" + fileNamePattern
	if err := validate(p); err != nil {
		return "", err
	}
	return p, nil
}

func validate(p string) error {
	switch {
	case strings.HasPrefix(p, "|"):
		return fmt.Errorf("%q: %w", p, ErrPipe)
	case len(p) > maxLen:
		return fmt.Errorf("%q is %d bytes: %w", p, len(p), ErrTooLong)
	case !strings.HasPrefix(p, "/"):
		// A relative pattern is resolved against the crashing process's
		// working directory, which is nowhere the agent watches.
		return fmt.Errorf("%q is not an absolute path: %w", p, ErrInvalid)
	case strings.ContainsFunc(p, func(r rune) bool { return r < ' ' || r == 0x7f }):
		// The kernel stops at a newline or NUL and keeps the rest silently.
		return fmt.Errorf("%q holds a control character: %w", p, ErrInvalid)
	}
	return nil
}

// Manager sets core_pattern through a sysctl file and restores the value it
// found there. It is safe for concurrent use, so that a deferred Restore and
// one on signal may race.
type Manager struct {
	path string
	log  logr.Logger

	mu sync.Mutex
	// saved is true between the first successful Set and a Restore.
	saved    bool
	original string
	written  string
	// statePath, when set, keeps original on disk too (see WithState).
	statePath string
}

// New returns a Manager for the sysctl file at sysctlPath.
func New(sysctlPath string, logger logr.Logger) *Manager {
	if logger.GetSink() == nil {
		logger = logr.Discard()
	}
	return &Manager{path: sysctlPath, log: logger.WithValues("sysctl", sysctlPath)}
}

// Set validates pattern and writes it. The first successful Set remembers the
// value it replaced; later ones do not, so that Restore brings back the
// administrator's value however often the pattern changed. Nothing is
// written if that value cannot be read, because it could not be restored.
func (m *Manager) Set(pattern string) error {
	if err := validate(pattern); err != nil {
		return fmt.Errorf("setting core_pattern: %w", err)
	}
	return m.set(pattern)
}

// SetPipe is Set for a pipe pattern ("|/absolute/helper args"), the agent's
// own receiver in corePattern Pipe.
func (m *Manager) SetPipe(pattern string) error {
	helper, ok := strings.CutPrefix(pattern, "|")
	if !ok {
		return fmt.Errorf("setting core_pattern: %q does not pipe to a program: %w", pattern, ErrInvalid)
	}
	if err := validate(helper); err != nil {
		return fmt.Errorf("setting core_pattern: %w", err)
	}
	if len(pattern) > maxLen {
		return fmt.Errorf("setting core_pattern: %q is %d bytes: %w", pattern, len(pattern), ErrTooLong)
	}
	return m.set(pattern)
}

func (m *Manager) set(pattern string) error {
	m.mu.Lock()
	defer m.mu.Unlock()

	original := m.original
	if !m.saved {
		cur, err := m.read()
		if err != nil {
			return fmt.Errorf("reading core_pattern before setting it: %w", err)
		}
		original = cur
		if saved, ok := m.loadState(); ok && cur == pattern {
			// An agent before us was killed before it could restore: the
			// value it replaced is on disk.
			original = saved
			m.log.Info("Core pattern still holds the managed pattern of an agent that did not exit cleanly; restoring later to the value it saved", "original", saved)
		} else if cur == pattern {
			m.log.Info("Core pattern already holds the managed pattern; the value before it is unknown and will not be restored", "pattern", pattern)
		}
		if err := m.saveState(original); err != nil {
			return fmt.Errorf("saving the current core_pattern before setting it: %w", err)
		}
	}
	if err := m.write(pattern); err != nil {
		return fmt.Errorf("setting core_pattern to %q: %w", pattern, err)
	}
	if !m.saved {
		m.saved, m.original = true, original
	}
	m.written = pattern
	m.log.Info("Set core_pattern", "pattern", pattern, "original", m.original)
	return nil
}

// Restore writes back the value the first Set replaced. It does nothing when
// Set never succeeded or Restore already did, and it leaves the file alone
// when someone else has changed it since Set: their value is newer than ours.
// After a failed write it may be called again.
func (m *Manager) Restore() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.saved {
		return nil
	}
	// A read error is not fatal: the write below is what matters, and it
	// reports its own error.
	if cur, err := m.read(); err == nil && cur != m.written {
		m.log.Info("Core pattern was changed by someone else; leaving it", "current", cur, "managed", m.written, "original", m.original)
		m.saved = false
		m.dropState()
		return nil
	}
	if err := m.write(m.original); err != nil {
		return fmt.Errorf("restoring core_pattern to %q: %w", m.original, err)
	}
	m.saved = false
	m.dropState()
	m.log.Info("Restored core_pattern", "pattern", m.original)
	return nil
}

// WithState makes the Manager keep the value it replaces in a file as well
// as in memory, so that an agent killed before it could restore (SIGKILL,
// an OOM kill, a node crash) is followed by one that still knows the
// administrator's value. It returns m.
func (m *Manager) WithState(path string) *Manager {
	m.statePath = path
	return m
}

func (m *Manager) loadState() (string, bool) {
	if m.statePath == "" {
		return "", false
	}
	b, err := os.ReadFile(m.statePath)
	if err != nil || len(b) > maxRead {
		return "", false
	}
	return string(b), true
}

func (m *Manager) saveState(v string) error {
	if m.statePath == "" {
		return nil
	}
	tmp := m.statePath + ".new"
	if err := os.WriteFile(tmp, []byte(v), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.statePath)
}

func (m *Manager) dropState() {
	if m.statePath != "" {
		_ = os.Remove(m.statePath)
	}
}

// read reads the sysctl file, without the trailing newline the kernel adds.
func (m *Manager) read() (string, error) {
	f, err := os.Open(m.path)
	if err != nil {
		return "", fmt.Errorf("reading core_pattern: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRead+1))
	if err != nil {
		return "", fmt.Errorf("reading core_pattern from %s: %w", m.path, err)
	}
	if len(b) > maxRead {
		return "", fmt.Errorf("reading core_pattern from %s: more than %d bytes, not a core_pattern file", m.path, maxRead)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// write replaces the file's contents with v in a single write(2), which is
// how a sysctl wants it. O_CREATE is left out on purpose: a missing file
// means no procfs, and creating one would hide that.
func (m *Manager) write(v string) error {
	if v == "" {
		// A zero-length write may never reach the sysctl handler; a lone
		// newline sets core_pattern to the empty string.
		v = "\n"
	}
	f, err := os.OpenFile(m.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(v); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", m.path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", m.path, err)
	}
	return nil
}
