//go:build linux

package detect

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

func observationOf(fi os.FileInfo) observation {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return observation{
			size:       st.Size,
			mtimeNanos: st.Mtim.Nano(),
			ctimeNanos: st.Ctim.Nano(),
			dev:        uint64(st.Dev), //nolint:unconvert // uint32 on some architectures
			ino:        st.Ino,
		}
	}
	return observation{size: fi.Size(), mtimeNanos: fi.ModTime().UnixNano()}
}

func observationOfStat(st *unix.Stat_t) observation {
	return observation{
		size:       st.Size,
		mtimeNanos: st.Mtim.Nano(),
		ctimeNanos: st.Ctim.Nano(),
		dev:        uint64(st.Dev), //nolint:unconvert // uint32 on some architectures
		ino:        st.Ino,
	}
}

// scanDir calls fn for every entry of dir but hidden ones (and so "." and
// ".."), in the order the file system lists them. With noFollow it refuses a dir that is a
// symbolic link, checked by the open itself rather than by a racy Lstat
// beforehand. It reads the listing in batches into buf and looks at each
// name relative to the open directory: the name passed to fn is a view of
// buf, valid only during the call.
func scanDir(dir string, noFollow bool, buf []byte, fn func(name []byte, e entry)) error {
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if noFollow {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := openRetry(dir, flags)
	if err != nil {
		return &os.PathError{Op: "open", Path: dir, Err: err}
	}
	defer unix.Close(fd) //nolint:errcheck // read only
	for {
		n, err := unix.ReadDirent(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "getdents", Path: dir, Err: err}
		}
		if n <= 0 {
			return nil
		}
		err = eachDirent(buf[:n], func(name []byte, typ uint8) {
			if hidden(name) {
				// Not even looked at: in Pipe mode every core has one.
				return
			}
			fn(name, lookAt(fd, name, typ))
		})
		if err != nil {
			return fmt.Errorf("listing %s: %w", dir, err)
		}
	}
}

func openRetry(path string, flags int) (int, error) {
	for {
		fd, err := unix.Open(path, flags, 0)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// Offsets in struct linux_dirent64: d_ino, d_off, d_reclen, d_type, d_name.
const (
	direntReclen = 16
	direntType   = 18
	direntName   = 19
)

// eachDirent calls fn for each record of a getdents64 buffer but "." and ".."
// and records of deleted entries.
func eachDirent(buf []byte, fn func(name []byte, typ uint8)) error {
	for len(buf) > 0 {
		if len(buf) < direntName {
			return errors.New("short directory record")
		}
		reclen := int(binary.NativeEndian.Uint16(buf[direntReclen:]))
		if reclen < direntName || reclen > len(buf) {
			return fmt.Errorf("directory record of %d bytes", reclen)
		}
		rec := buf[:reclen]
		buf = buf[reclen:]
		if binary.NativeEndian.Uint64(rec) == 0 {
			continue
		}
		name := rec[direntName:]
		if i := bytes.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		if len(name) == 0 || string(name) == "." || string(name) == ".." {
			continue
		}
		fn(name, rec[direntType])
	}
	return nil
}

// lookAt stats name in the directory open at dirfd, unless its type says
// that it is neither a file nor a directory.
func lookAt(dirfd int, name []byte, typ uint8) entry {
	switch typ {
	case unix.DT_DIR:
		return entry{kind: entryDir}
	case unix.DT_REG, unix.DT_UNKNOWN:
	default:
		return entry{kind: entryOther}
	}
	var st unix.Stat_t
	// Fstatat copies the name at once; the view need not outlive the call.
	err := unix.Fstatat(dirfd, unsafe.String(unsafe.SliceData(name), len(name)), &st, unix.AT_SYMLINK_NOFOLLOW)
	for errors.Is(err, unix.EINTR) {
		err = unix.Fstatat(dirfd, unsafe.String(unsafe.SliceData(name), len(name)), &st, unix.AT_SYMLINK_NOFOLLOW)
	}
	switch {
	case errors.Is(err, unix.ENOENT):
		return entry{kind: entryOther}
	case err != nil:
		return entry{kind: entryError, err: err}
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return entry{kind: entryRegular, obs: observationOfStat(&st)}
	case unix.S_IFDIR:
		return entry{kind: entryDir}
	default:
		return entry{kind: entryOther}
	}
}
