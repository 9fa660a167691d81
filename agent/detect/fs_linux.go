//go:build linux

package detect

import (
	"os"
	"syscall"
)

func observationOf(fi os.FileInfo) observation {
	o := observation{size: fi.Size(), mtimeNanos: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		o.dev = uint64(st.Dev) //nolint:unconvert // uint32 on some architectures
		o.ino = st.Ino
		o.ctimeNanos = st.Ctim.Nano()
	}
	return o
}

// readDir lists dir; with noFollow it refuses a dir that is a symbolic link,
// checked by the open itself rather than by a racy Lstat beforehand.
func readDir(dir string, noFollow bool) ([]os.DirEntry, error) {
	flags := os.O_RDONLY | syscall.O_DIRECTORY
	if noFollow {
		flags |= syscall.O_NOFOLLOW
	}
	f, err := os.OpenFile(dir, flags, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.ReadDir(-1)
}
