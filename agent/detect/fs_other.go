//go:build !linux

package detect

import (
	"errors"
	"os"
	"path/filepath"
)

// observationOf without Linux stat fields: development builds only. Without
// device and inode, identities rest on mtime and size.
func observationOf(fi os.FileInfo) observation {
	m := fi.ModTime().UnixNano()
	return observation{size: fi.Size(), mtimeNanos: m, ctimeNanos: m}
}

// scanDir lists dir but its hidden entries with os.ReadDir and Lstat:
// development builds only.
func scanDir(dir string, _ bool, _ []byte, fn func(name []byte, e entry)) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, de := range entries {
		if hidden(de.Name()) {
			continue
		}
		fi, err := os.Lstat(filepath.Join(dir, de.Name()))
		var e entry
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			e = entry{kind: entryError, err: err}
		case fi.IsDir():
			e = entry{kind: entryDir}
		case fi.Mode().IsRegular():
			e = entry{kind: entryRegular, obs: observationOf(fi)}
		}
		fn([]byte(de.Name()), e)
	}
	return nil
}
