//go:build !linux

package detect

import "os"

// observationOf without Linux stat fields: development builds only. Without
// device and inode, identities rest on mtime and size.
func observationOf(fi os.FileInfo) observation {
	m := fi.ModTime().UnixNano()
	return observation{size: fi.Size(), mtimeNanos: m, ctimeNanos: m}
}

func readDir(dir string, _ bool) ([]os.DirEntry, error) {
	return os.ReadDir(dir)
}
