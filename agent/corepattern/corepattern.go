package corepattern

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"

	"github.com/coredog/coredog/agent/hostdir"
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
	// ErrUnsafeHelper is returned by Restore when the value to restore pipes
	// to a program that someone other than root could have put there or
	// could change: the kernel would run it as root. The managed pattern is
	// left in place.
	ErrUnsafeHelper = errors.New("core_pattern to restore pipes to a program root cannot trust")
)

// PipeLimit is the kernel.core_pipe_limit that SetPipe sets: non-zero, so
// that the kernel keeps a crashed process's /proc/<pid> until the receiver
// has read it, and large enough that the receivers' own node-wide limit,
// not the kernel, turns away crashes beyond it (the kernel would drop them
// with a line in its log only).
const PipeLimit = 16

// State file names, in the directory given to WithState.
const (
	patternState   = "core_pattern.original"
	pipeLimitState = "core_pipe_limit.original"
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

// value is one sysctl the Manager sets and restores.
type value struct {
	name string
	path string
	// state is the file, in the Manager's state directory, that keeps
	// original; "" keeps it in memory only.
	state string

	// saved is true between the first successful set and a restore.
	saved    bool
	original string
	written  string
}

// Manager sets core_pattern (and, for a pipe, core_pipe_limit) through sysctl
// files and restores the values it found there. It is safe for concurrent
// use, so that a deferred Restore and one on signal may race.
type Manager struct {
	log logr.Logger

	mu        sync.Mutex
	pattern   value
	pipeLimit *value
	// stateDir, when set, keeps the originals on disk too (see WithState).
	stateDir string
	// helperRoot is where a pipe's helper is looked up before it is restored.
	helperRoot string
}

// New returns a Manager for the core_pattern sysctl file at sysctlPath.
func New(sysctlPath string, logger logr.Logger) *Manager {
	if logger.GetSink() == nil {
		logger = logr.Discard()
	}
	return &Manager{
		log:        logger,
		pattern:    value{name: "core_pattern", path: sysctlPath},
		helperRoot: "/",
	}
}

// WithPipeLimit makes SetPipe set the core_pipe_limit sysctl file at path to
// PipeLimit as well, and Restore put its value back. It returns m.
func (m *Manager) WithPipeLimit(path string) *Manager {
	m.pipeLimit = &value{name: "core_pipe_limit", path: path, state: pipeLimitState}
	if m.stateDir == "" {
		m.pipeLimit.state = ""
	}
	return m
}

// WithHelperRoot makes Restore look up the program a pipe pattern names
// under root (the host's root as the agent sees it, /proc/1/root) rather
// than under /. It returns m.
func (m *Manager) WithHelperRoot(root string) *Manager {
	m.helperRoot = root
	return m
}

// WithState makes the Manager keep the values it replaces in files as well
// as in memory, so that an agent killed before it could restore (SIGKILL,
// an OOM kill, a node crash) is followed by one that still knows the
// administrator's values. path names the core_pattern file; the directory
// holding it must be one root alone can change (hostdir.Open), and every
// file in it is created exclusively and read only when root wrote it. It
// returns m.
func (m *Manager) WithState(path string) *Manager {
	m.stateDir = filepath.Dir(path)
	m.pattern.state = filepath.Base(path)
	if m.pipeLimit != nil {
		m.pipeLimit.state = pipeLimitState
	}
	return m
}

// Set validates pattern and writes it. The first successful Set remembers the
// value it replaced; later ones do not, so that Restore brings back the
// administrator's value however often the pattern changed. Nothing is
// written if that value cannot be read, because it could not be restored.
func (m *Manager) Set(pattern string) error {
	if err := validate(pattern); err != nil {
		return fmt.Errorf("setting core_pattern: %w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.set(&m.pattern, pattern)
}

// SetPipe is Set for a pipe pattern ("|/absolute/helper args"), the agent's
// own receiver in corePattern Pipe. With WithPipeLimit it first sets
// core_pipe_limit to PipeLimit; if the pattern then fails, the limit is put
// back.
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
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.pipeLimit == nil {
		return m.set(&m.pattern, pattern)
	}
	// The limit first, so that it holds for the first receiver the kernel
	// starts.
	if err := m.set(m.pipeLimit, strconv.Itoa(PipeLimit)); err != nil {
		return err
	}
	if err := m.set(&m.pattern, pattern); err != nil {
		return errors.Join(err, m.restore(m.pipeLimit))
	}
	return nil
}

func (m *Manager) set(v *value, want string) error {
	original := v.original
	if !v.saved {
		cur, err := read(v.path)
		if err != nil {
			return fmt.Errorf("reading %s before setting it: %w", v.name, err)
		}
		original = cur
		saved, ok, err := m.loadState(v)
		if err != nil {
			return fmt.Errorf("reading the saved %s: %w", v.name, err)
		}
		if ok && cur == want {
			// An agent before us was killed before it could restore: the
			// value it replaced is on disk.
			original = saved
			m.log.Info("Sysctl still holds the value of an agent that did not exit cleanly; restoring later to the value it saved", "name", v.name, "path", v.path, "original", saved)
		} else if cur == want {
			m.log.Info("Sysctl already holds the managed value; the value before it is unknown and will not be restored", "name", v.name, "path", v.path, "value", want)
		}
		if err := m.saveState(v, original); err != nil {
			return fmt.Errorf("saving the current %s before setting it: %w", v.name, err)
		}
	}
	if err := write(v.path, want); err != nil {
		return fmt.Errorf("setting %s to %q: %w", v.name, want, err)
	}
	if !v.saved {
		v.saved, v.original = true, original
	}
	v.written = want
	m.log.Info("Set sysctl", "name", v.name, "path", v.path, "value", want, "original", v.original)
	return nil
}

// Restore writes back the values the first Set (and SetPipe) replaced. It
// does nothing when Set never succeeded or Restore already did, and it leaves
// a file alone when someone else has changed it since Set: their value is
// newer than ours. A core_pattern that pipes to a program is restored only
// when that program and every directory on its path are root's and no one
// else may write them (the kernel runs it as root); otherwise Restore leaves
// the managed pattern in place and returns ErrUnsafeHelper. After a failed
// write it may be called again.
func (m *Manager) Restore() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	if m.pipeLimit != nil {
		errs = append(errs, m.restore(m.pipeLimit))
	}
	errs = append(errs, m.restore(&m.pattern))
	return errors.Join(errs...)
}

func (m *Manager) restore(v *value) error {
	if !v.saved {
		return nil
	}
	// A read error is not fatal: the write below is what matters, and it
	// reports its own error.
	if cur, err := read(v.path); err == nil && cur != v.written {
		m.log.Info("Sysctl was changed by someone else; leaving it", "name", v.name, "path", v.path, "current", cur, "managed", v.written, "original", v.original)
		v.saved = false
		m.dropState(v)
		return nil
	}
	if v == &m.pattern {
		if err := m.checkHelper(v.original); err != nil {
			m.log.Error(err, "Not restoring core_pattern: the program it pipes to is not safe to run as root; the managed pattern stays", "path", v.path, "original", v.original)
			return fmt.Errorf("restoring core_pattern to %q: %w", v.original, err)
		}
	}
	if err := write(v.path, v.original); err != nil {
		return fmt.Errorf("restoring %s to %q: %w", v.name, v.original, err)
	}
	v.saved = false
	m.dropState(v)
	m.log.Info("Restored sysctl", "name", v.name, "path", v.path, "value", v.original)
	return nil
}

// checkHelper checks the program a pipe pattern runs; other patterns pass.
func (m *Manager) checkHelper(pattern string) error {
	cmd, ok := strings.CutPrefix(pattern, "|")
	if !ok {
		return nil
	}
	fields := strings.Fields(cmd)
	if len(fields) == 0 {
		return fmt.Errorf("a pipe to no program: %w", ErrUnsafeHelper)
	}
	if err := hostdir.Helper(m.helperRoot, fields[0]); err != nil {
		return fmt.Errorf("%w: %w", ErrUnsafeHelper, err)
	}
	return nil
}

// stateFiles opens the state directory, which must be one root alone can
// change: a directory someone else made, or can change, is refused rather
// than trusted with the value that Restore writes into the kernel.
func (m *Manager) stateFiles() (*hostdir.Dir, error) {
	d, err := hostdir.Open(m.stateDir)
	if err != nil {
		return nil, fmt.Errorf("the saved-value directory: %w", err)
	}
	return d, nil
}

func (m *Manager) loadState(v *value) (string, bool, error) {
	if m.stateDir == "" || v.state == "" {
		return "", false, nil
	}
	d, err := m.stateFiles()
	if err != nil {
		return "", false, err
	}
	defer d.Close()
	b, err := d.ReadFile(v.state, maxRead)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return string(b), true, nil
}

func (m *Manager) saveState(v *value, s string) error {
	if m.stateDir == "" || v.state == "" {
		return nil
	}
	d, err := m.stateFiles()
	if err != nil {
		return err
	}
	defer d.Close()
	return d.WriteFile(v.state, 0o600, func(w io.Writer) error {
		_, err := io.WriteString(w, s)
		return err
	})
}

func (m *Manager) dropState(v *value) {
	if m.stateDir == "" || v.state == "" {
		return
	}
	if d, err := m.stateFiles(); err == nil {
		_ = d.Remove(v.state)
		_ = d.Close()
	}
}

// read reads a sysctl file, without the trailing newline the kernel adds.
func read(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", filepath.Base(p), err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRead+1))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", p, err)
	}
	if len(b) > maxRead {
		return "", fmt.Errorf("reading %s: more than %d bytes, not a sysctl file", p, maxRead)
	}
	return strings.TrimSuffix(string(b), "\n"), nil
}

// write replaces a sysctl file's contents with v in a single write(2), which
// is how a sysctl wants it. O_CREATE is left out on purpose: a missing file
// means no procfs, and creating one would hide that.
func write(p, v string) error {
	if v == "" {
		// A zero-length write may never reach the sysctl handler; a lone
		// newline sets core_pattern to the empty string.
		v = "\n"
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(v); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("closing %s: %w", p, err)
	}
	return nil
}
