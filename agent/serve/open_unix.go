//go:build unix

package serve

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// openFlags: O_NOFOLLOW so a path turned into a symbolic link is refused by
// the open itself (no racy Lstat first); O_NONBLOCK so a FIFO swapped in
// cannot hang the open waiting for a writer; O_CLOEXEC so no child inherits
// the descriptor. Regular files ignore O_NONBLOCK.
const openFlags = os.O_RDONLY | syscall.O_NOFOLLOW | syscall.O_CLOEXEC | syscall.O_NONBLOCK

var errNotSameFile = errors.New("not the registered file")

// openRegistered opens e.Path and checks, on the open descriptor, that it is
// the regular file that was registered. The error says why not, for a V(1)
// log; the client only ever sees 404.
func openRegistered(e Entry) (source, error) {
	if !filepath.IsAbs(e.Path) {
		// Relative to whatever the working directory is: not what was registered.
		return nil, fmt.Errorf("%w: path is not absolute", errNotSameFile)
	}
	f, err := os.OpenFile(e.Path, openFlags, 0)
	if err != nil {
		return nil, fmt.Errorf("opening: %w", err)
	}
	if err := checkSame(f, e); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func checkSame(f *os.File, e Entry) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat of open file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: mode %v is not a regular file", errNotSameFile, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%w: no device and inode", errNotSameFile)
	}
	dev, ino := uint64(st.Dev), uint64(st.Ino) //nolint:unconvert // narrower types on some platforms
	if dev != e.Device || ino != e.Inode {
		return fmt.Errorf("%w: device %d inode %d, registered device %d inode %d", errNotSameFile, dev, ino, e.Device, e.Inode)
	}
	return nil
}
