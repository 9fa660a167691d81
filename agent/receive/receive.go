// Package receive is the kernel's core-dump pipe handler for corePattern
// Pipe. With a path core_pattern the kernel writes a core inside the
// crashing process's own mount namespace, which for a container is the
// container's filesystem, out of the agent's sight. With a pipe pattern the
// kernel runs a helper in the host's namespaces and hands it the core on
// stdin; this package is that helper. The agent installs a copy of its own
// binary and a small configuration under hostPath, and the kernel runs
// `<hostPath>/.coredog/agent receive %P %p %I %i %s %t %u %g %d %h %e`.
//
// It reads the process's cgroup while the process still exists, writes the
// core under a dot name (which detection ignores), and renames the finished
// file into place under the policy's file name pattern, so the agent sees
// only complete files. It owns that hand-over; it never talks to the API
// server, and it never writes outside the configured directory.
package receive

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coredog/coredog/agent/corefile"
)

// Layout under hostPath.
const (
	// InstallDir holds the installed binary and its configuration.
	InstallDir = ".coredog"
	// BinaryName is the installed copy of the agent.
	BinaryName = "agent"
	// ConfigName is the receiver's configuration, written by the agent.
	ConfigName = "receive.json"
	// CgroupSuffix names the sidecar that keeps a core's cgroup: ".<core name>.cgroup".
	CgroupSuffix = ".cgroup"
)

// Specifiers is what the kernel passes, in this order, after "receive".
// Arguments are split before the kernel expands them (Linux 5.3 and later),
// so %e and %h arrive whole even with spaces in them. %d is the dump mode:
// 2 when fs.suid_dumpable=2 made the kernel dump a privileged process as
// root. SpecifiersWithoutDumpMode is the older list, still used when the
// longer one would not fit the kernel's 127 bytes, and still read.
const (
	Specifiers                = "%P %p %I %i %s %t %u %g %d %h %e"
	SpecifiersWithoutDumpMode = "%P %p %I %i %s %t %u %g %h %e"
)

// DumpModeXattr is the extended attribute in which the receiver leaves a
// core's dump mode (%d, "1" or "2") on the file itself. It is in the
// trusted namespace: only a process with CAP_SYS_ADMIN (the receiver, a
// Pipe agent) can set or read it, so no pod can forge it on a file it owns.
const DumpModeXattr = "trusted.coredog.dumpmode"

// Config is what the agent tells the receiver.
type Config struct {
	// Dir is where cores go (the policy's hostPath).
	Dir string `json:"dir"`
	// FileNamePattern names the files, as a path core_pattern would.
	FileNamePattern string `json:"fileNamePattern"`
	// MaxBytes stops writing a core at this size (0: no limit); the rest of
	// the stream is read and dropped so the kernel can finish.
	MaxBytes int64 `json:"maxBytes,omitempty"`
	// ProcRoot is the host's /proc.
	ProcRoot string `json:"procRoot,omitempty"`
}

// CorePattern is the core_pattern that runs the receiver installed under dir.
func CorePattern(dir string) string {
	p := "|" + filepath.Join(dir, InstallDir, BinaryName) + " receive " + Specifiers
	if len(p) > maxCorePattern {
		return "|" + filepath.Join(dir, InstallDir, BinaryName) + " receive " + SpecifiersWithoutDumpMode
	}
	return p
}

// maxCorePattern is the longest core_pattern the kernel keeps.
const maxCorePattern = 127

// ParseArgs reads the kernel's arguments (after "receive") into name fields.
func ParseArgs(args []string) (corefile.NameFields, error) {
	var f corefile.NameFields
	dumpMode := ""
	switch len(args) {
	case 11:
		dumpMode = args[8]
		args = append(args[:8:8], args[9:]...)
	case 10:
	default:
		return f, fmt.Errorf("want the 11 values of %q (or the 10 of %q), got %d arguments", Specifiers, SpecifiersWithoutDumpMode, len(args))
	}
	ints := make([]int64, 8)
	for i := range 8 {
		v, err := strconv.ParseInt(args[i], 10, 64)
		if err != nil {
			return f, fmt.Errorf("argument %d (%s): %w", i+1, strings.Fields(Specifiers)[i], err)
		}
		ints[i] = v
	}
	uid, gid := ints[6], ints[7]
	f.HostPID, f.PID, f.HostTID, f.TID = ints[0], ints[1], ints[2], ints[3]
	f.Signal = int(ints[4])
	f.Time = time.Unix(ints[5], 0).UTC()
	f.UID, f.GID = &uid, &gid
	f.Hostname, f.Executable = args[8], args[9]
	// Any other value leaves the dump mode unknown: a flag is no reason to
	// lose a core.
	if dumpMode == "1" || dumpMode == "2" {
		f.DumpMode = int(dumpMode[0] - '0')
	}
	return f, nil
}

// Run receives one core: cfg from the installed configuration, args from
// the kernel, the core on stdin. It returns the path of the finished file.
func Run(cfg Config, args []string, stdin io.Reader) (string, error) {
	// Whatever happens, read the whole stream: the kernel waits for the
	// helper, and a helper that stops reading stalls the dying process.
	defer func() { _, _ = io.Copy(io.Discard, stdin) }()
	pattern, err := corefile.ParsePattern(cfg.FileNamePattern)
	if err != nil {
		return "", err
	}
	fields, err := ParseArgs(args)
	if err != nil {
		return "", err
	}
	// The dying process exists while the kernel feeds us its core; read its
	// cgroup before the core, since with core_pipe_limit 0 the kernel need
	// not wait for us once the stream has ended.
	var cgroup []byte
	if cfg.ProcRoot != "" && fields.HostPID > 0 {
		cgroup, _ = readCgroup(filepath.Join(cfg.ProcRoot, strconv.FormatInt(fields.HostPID, 10), "cgroup"))
	}
	name := pattern.Render(fields)
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") || len(name) > 255 {
		return "", fmt.Errorf("the pattern renders an unusable file name %q", name)
	}
	final := filepath.Join(cfg.Dir, name)
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	tmp := filepath.Join(cfg.Dir, ".receiving-"+hex.EncodeToString(suffix))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", tmp, err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = os.Remove(tmp)
		}
	}()
	var src = stdin
	if cfg.MaxBytes > 0 {
		src = io.LimitReader(stdin, cfg.MaxBytes)
	}
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return "", fmt.Errorf("writing the core: %w", err)
	}
	if fields.DumpMode != 0 {
		// Best effort: on a file system without extended attributes the
		// dump mode stays unknown (see the agent's dumpModeOf).
		_ = unix.Fsetxattr(int(f.Fd()), DumpModeXattr, []byte(strconv.Itoa(fields.DumpMode)), 0)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "", fmt.Errorf("syncing the core: %w", err)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("closing the core: %w", err)
	}
	// Keep the cgroup next to the core, for the agent to attribute it.
	if len(cgroup) > 0 {
		writeSidecar(filepath.Join(cfg.Dir, "."+name+CgroupSuffix), cgroup)
	}
	// Never replace a file that is there: two crashes can render one name
	// (same second, same PID after a PID wrap); the second gets a suffix.
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		final += "." + hex.EncodeToString(suffix)
		err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return "", fmt.Errorf("moving the core into place as %s: %w", final, err)
	}
	ok = true
	return final, nil
}

func readCgroup(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// ReadConfig reads the configuration installed next to the binary.
func ReadConfig(path string) (Config, error) {
	var c Config
	data, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("reading %s: %w", path, err)
	}
	if !filepath.IsAbs(c.Dir) {
		return c, fmt.Errorf("%s: dir %q is not absolute", path, c.Dir)
	}
	return c, nil
}

// Install puts a copy of the binary at src and the configuration under
// cfg.Dir/.coredog, each written whole and renamed into place, so that the
// kernel never runs a half-written helper. It returns the core_pattern.
func Install(src string, cfg Config) (string, error) {
	dir := filepath.Join(cfg.Dir, InstallDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("opening the agent binary: %w", err)
	}
	defer in.Close()
	if err := writeAtomic(filepath.Join(dir, BinaryName), 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	}); err != nil {
		return "", err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	if err := writeAtomic(filepath.Join(dir, ConfigName), 0o644, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}); err != nil {
		return "", err
	}
	return CorePattern(cfg.Dir), nil
}

func writeAtomic(path string, mode os.FileMode, fill func(io.Writer) error) error {
	tmp := path + ".new"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := errors.Join(fill(f), f.Sync(), f.Close()); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Uninstall removes the installed binary and configuration (the directory
// stays: it holds the agent's saved core_pattern while one runs).
func Uninstall(dir string) error {
	var errs []error
	for _, name := range []string{BinaryName, ConfigName} {
		if err := os.Remove(filepath.Join(dir, InstallDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// writeSidecar leaves the cgroup beside the core. The receiver runs as root
// in the host's namespaces, and pods may write into the directory: whatever
// is at path (a symbolic link to a host file, a FIFO) is unlinked, never
// followed, and the file is created anew, exclusively.
func writeSidecar(path string, cgroup []byte) {
	_ = os.Remove(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	if _, err := f.Write(cgroup); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return
	}
	_ = f.Close()
}
