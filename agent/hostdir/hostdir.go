// Package hostdir opens host directories that root may trust, and reads and
// writes files in them without following links. The Pipe receiver runs as
// root in the host's namespaces and the kernel runs whatever program
// core_pattern names: a directory that someone else can change (or rename
// away and replace) hands root to them.
//
// It owns the checks of ownership and mode along a path, walked one
// component at a time with openat and O_NOFOLLOW, and the exclusive creation
// of files relative to a verified descriptor. It must not decide what goes
// into those files, and never follows a symbolic link unless asked to (Helper),
// and then only one that root owns in a directory root alone may change.
package hostdir

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrUnsafe marks a path that someone other than root can change or replace.
var ErrUnsafe = errors.New("not safe for root to trust")

// maxLinks bounds the symbolic links Helper follows.
const maxLinks = 16

// Dir is an open, verified directory.
type Dir struct {
	fd   int
	path string
}

// Fd is the directory's descriptor, valid until Close.
func (d *Dir) Fd() int { return d.fd }

// Path is the path the directory was opened at.
func (d *Dir) Path() string { return d.path }

// Close closes the descriptor.
func (d *Dir) Close() error { return unix.Close(d.fd) }

// Open opens a directory that root alone can change: every component from /
// is a directory owned by root, and none may be written by group or others,
// except a sticky directory (such as /tmp) on the way, whose root-owned
// entries others cannot rename or remove.
func Open(path string) (*Dir, error) {
	return open(path, true)
}

// OpenShared opens a directory that others may write into (the core
// directory), as Open does, except that the directory itself may be writable
// by group and others. Its path cannot be changed by anyone but root, but its
// entries can: open them only through the descriptor, with O_NOFOLLOW and
// O_EXCL.
func OpenShared(path string) (*Dir, error) {
	return open(path, false)
}

func open(path string, strict bool) (*Dir, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("%s: not an absolute path", path)
	}
	clean := filepath.Clean(path)
	fd, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("opening /: %w", err)
	}
	how := shared
	if strict {
		how = final
	}
	rootCheck := crossing
	if clean == "/" {
		rootCheck = how
	}
	if err := checkDir(fd, "/", rootCheck); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	comps := strings.Split(strings.TrimPrefix(clean, "/"), "/")
	if clean == "/" {
		comps = nil
	}
	for i, c := range comps {
		walked := "/" + filepath.Join(comps[:i+1]...)
		nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		_ = unix.Close(fd)
		if err != nil {
			if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return nil, fmt.Errorf("%s is a symbolic link or not a directory: %w", walked, ErrUnsafe)
			}
			return nil, fmt.Errorf("opening %s: %w", walked, err)
		}
		fd = nfd
		check := crossing
		if i == len(comps)-1 {
			check = how
		}
		if err := checkDir(fd, walked, check); err != nil {
			_ = unix.Close(fd)
			return nil, err
		}
	}
	return &Dir{fd: fd, path: clean}, nil
}

func displayPath(p string) string {
	if p == "" {
		return "/"
	}
	return p
}

// How checkDir judges who else may write a directory.
const (
	// crossing: a directory on the way; others may write it if it is sticky.
	crossing = iota
	// final: the directory asked for; no one else may write it.
	final
	// shared: the directory asked for, which others may write.
	shared
)

// checkDir checks that fd is a directory owned by root that no one else may
// write, as how says.
func checkDir(fd int, path string, how int) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s is not a directory: %w", path, ErrUnsafe)
	}
	if st.Uid != 0 {
		return fmt.Errorf("%s is owned by uid %d, not root: %w", path, st.Uid, ErrUnsafe)
	}
	writable := st.Mode&0o022 != 0
	if (how == final && writable) || (how == crossing && writable && st.Mode&unix.S_ISVTX == 0) {
		return fmt.Errorf("%s has mode %#o: group or others may write it: %w", path, st.Mode&0o7777, ErrUnsafe)
	}
	return nil
}

// crossable reports whether a directory may be walked through: one that
// others may write must be sticky, and the next component is then checked
// to be root's (every component is).
func crossable(st unix.Stat_t, path string) error {
	if st.Mode&0o022 != 0 && st.Mode&unix.S_ISVTX == 0 {
		return fmt.Errorf("%s has mode %#o: group or others may write it: %w", path, st.Mode&0o7777, ErrUnsafe)
	}
	return nil
}

// Ensure opens the directory name inside d, creating it with mode if it is
// missing. One that exists must be root's and writable by no one else, and
// d must be a directory whose root-owned entries no one else can replace
// (not writable by others, or sticky): a directory someone else created or
// may change is refused with ErrUnsafe, never adopted.
func (d *Dir) Ensure(name string, mode uint32) (*Dir, error) {
	if err := plainName(name); err != nil {
		return nil, err
	}
	var pst unix.Stat_t
	if err := unix.Fstat(d.fd, &pst); err != nil {
		return nil, fmt.Errorf("stat %s: %w", d.path, err)
	}
	if err := crossable(pst, d.path); err != nil {
		return nil, err
	}
	p := filepath.Join(d.path, name)
	created := true
	if err := unix.Mkdirat(d.fd, name, mode); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("creating %s: %w", p, err)
		}
		created = false
	}
	fd, err := unix.Openat(d.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			return nil, fmt.Errorf("%s exists and is a symbolic link or not a directory: %w", p, ErrUnsafe)
		}
		return nil, fmt.Errorf("opening %s: %w", p, err)
	}
	if created {
		// The mode asked for, whatever the umask.
		if err := unix.Fchmod(fd, mode); err != nil {
			_ = unix.Close(fd)
			return nil, fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	if err := checkDir(fd, p, final); err != nil {
		_ = unix.Close(fd)
		if !created {
			return nil, fmt.Errorf("%w (it was there before the agent; remove it)", err)
		}
		return nil, err
	}
	return &Dir{fd: fd, path: p}, nil
}

func plainName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%q is not a plain file name", name)
	}
	return nil
}

// Create creates name in d exclusively (O_EXCL, O_NOFOLLOW): it fails when
// anything, a link included, is at that name.
func (d *Dir) Create(name string, mode uint32) (*os.File, error) {
	if err := plainName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(d.path, name)
	fd, err := unix.Openat(d.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if err != nil {
		return nil, &os.PathError{Op: "create", Path: p, Err: err}
	}
	if err := unix.Fchmod(fd, mode); err != nil {
		_ = unix.Close(fd)
		return nil, &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// Replace creates name anew: whatever is at that name (a link, a FIFO, an
// old file) is unlinked, never followed, and the file is created
// exclusively.
func (d *Dir) Replace(name string, mode uint32) (*os.File, error) {
	if err := d.Remove(name); err != nil {
		return nil, err
	}
	return d.Create(name, mode)
}

// WriteFile writes name whole: into name.new, created exclusively, synced,
// then renamed over name, so that no reader sees half a file.
func (d *Dir) WriteFile(name string, mode uint32, fill func(io.Writer) error) error {
	tmp := name + ".new"
	f, err := d.Replace(tmp, mode)
	if err != nil {
		return err
	}
	if err := errors.Join(fill(f), f.Sync(), f.Close()); err != nil {
		_ = d.Remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Join(d.path, name), err)
	}
	if err := unix.Renameat(d.fd, tmp, d.fd, name); err != nil {
		_ = d.Remove(tmp)
		return fmt.Errorf("renaming %s into place: %w", filepath.Join(d.path, name), err)
	}
	return nil
}

// Remove unlinks name; a missing name is not an error.
func (d *Dir) Remove(name string) error {
	if err := plainName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return &os.PathError{Op: "remove", Path: filepath.Join(d.path, name), Err: err}
	}
	return nil
}

// OpenOwn opens name for flags (O_NOFOLLOW and O_NONBLOCK are added) and
// checks that it is a regular file that root owns, no one else may write, and
// that has a single link: a file root wrote. Anything else is ErrUnsafe.
func (d *Dir) OpenOwn(name string, flags int) (*os.File, error) {
	if err := plainName(name); err != nil {
		return nil, err
	}
	p := filepath.Join(d.path, name)
	fd, err := unix.Openat(d.fd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%s is a symbolic link: %w", p, ErrUnsafe)
		}
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		_ = unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: p, Err: err}
	}
	if err := ownFile(st, p); err != nil {
		_ = unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), p), nil
}

func ownFile(st unix.Stat_t, p string) error {
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		return fmt.Errorf("%s is not a regular file: %w", p, ErrUnsafe)
	case st.Uid != 0:
		return fmt.Errorf("%s is owned by uid %d, not root: %w", p, st.Uid, ErrUnsafe)
	case st.Mode&0o022 != 0:
		return fmt.Errorf("%s has mode %#o: group or others may write it: %w", p, st.Mode&0o7777, ErrUnsafe)
	case st.Nlink != 1:
		return fmt.Errorf("%s has %d links: %w", p, st.Nlink, ErrUnsafe)
	}
	return nil
}

// ReadFile reads name (see OpenOwn), at most limit bytes; a longer file is
// an error.
func (d *Dir) ReadFile(name string, limit int64) ([]byte, error) {
	f, err := d.OpenOwn(name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is over %d bytes", f.Name(), limit)
	}
	return b, nil
}

// Helper checks a program that the kernel would run as root (a core_pattern
// pipe): under root (the host's root, "/" or /proc/1/root), the executable
// and every directory on its path must be owned by root and not writable by
// group or others (a sticky directory may be crossed). Symbolic links are
// followed only when root owns them, as a directory root alone may change
// holds them. The path is resolved as the kernel would, relative to root. A
// program that is missing from a directory only root may write passes: only
// root can put one there.
func Helper(root, helper string) error {
	if !filepath.IsAbs(helper) {
		return fmt.Errorf("helper %q is not an absolute path: %w", helper, ErrUnsafe)
	}
	rootFd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", root, err)
	}
	defer unix.Close(rootFd)
	if err := checkDir(rootFd, "/", crossing); err != nil {
		return err
	}
	fd, err := unix.Dup(rootFd)
	if err != nil {
		return err
	}
	defer func() { _ = unix.Close(fd) }()
	pending := strings.Split(strings.Trim(helper, "/"), "/")
	walked, links := "", 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		if c == "" || c == "." {
			continue
		}
		var dst unix.Stat_t
		if err := unix.Fstat(fd, &dst); err != nil {
			return err
		}
		if err := crossable(dst, displayPath(walked)); err != nil {
			return fmt.Errorf("helper %s: %w", helper, err)
		}
		if c == ".." {
			// Going up may leave a checked directory for one that is not: refuse.
			return fmt.Errorf("helper %s: a \"..\" component: %w", helper, ErrUnsafe)
		}
		var st unix.Stat_t
		if err := unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) && dst.Mode&0o022 == 0 {
				// Missing, in a directory only root may write: only root
				// can put a program there, and until then the kernel runs
				// nothing.
				return nil
			}
			return fmt.Errorf("helper %s: %s/%s: %w", helper, walked, c, err)
		}
		name := walked + "/" + c
		if st.Uid != 0 {
			return fmt.Errorf("helper %s: %s is owned by uid %d, not root: %w", helper, name, st.Uid, ErrUnsafe)
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFLNK:
			links++
			if links > maxLinks {
				return fmt.Errorf("helper %s: too many symbolic links: %w", helper, ErrUnsafe)
			}
			target, err := readlinkat(fd, c)
			if err != nil {
				return fmt.Errorf("helper %s: reading link %s: %w", helper, name, err)
			}
			rest := strings.Split(target, "/")
			if strings.HasPrefix(target, "/") {
				nfd, err := unix.Dup(rootFd)
				if err != nil {
					return err
				}
				_ = unix.Close(fd)
				fd, walked = nfd, ""
			}
			pending = append(rest, pending...)
			continue
		case unix.S_IFDIR:
			if len(pending) == 0 {
				return fmt.Errorf("helper %s is a directory: %w", helper, ErrUnsafe)
			}
			nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err != nil {
				return fmt.Errorf("helper %s: opening %s: %w", helper, name, err)
			}
			_ = unix.Close(fd)
			fd, walked = nfd, name
			if err := checkDir(fd, name, crossing); err != nil {
				return fmt.Errorf("helper %s: %w", helper, err)
			}
		case unix.S_IFREG:
			if len(pending) != 0 {
				return fmt.Errorf("helper %s: %s is not a directory", helper, name)
			}
			if st.Mode&0o022 != 0 {
				return fmt.Errorf("helper %s has mode %#o: group or others may write it: %w", helper, st.Mode&0o7777, ErrUnsafe)
			}
			return nil
		default:
			return fmt.Errorf("helper %s: %s is not a regular file: %w", helper, name, ErrUnsafe)
		}
	}
	return fmt.Errorf("helper %s names no file: %w", helper, ErrUnsafe)
}

func readlinkat(fd int, name string) (string, error) {
	buf := make([]byte, unix.PathMax)
	n, err := unix.Readlinkat(fd, name, buf)
	if err != nil {
		return "", err
	}
	if n >= len(buf) {
		return "", errors.New("link target too long")
	}
	return string(buf[:n]), nil
}
