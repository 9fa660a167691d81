//go:build linux

package nodeguard

import (
	"fmt"
	"syscall"
)

// Statfs measures the file system that holds dir. Free is the space available
// to unprivileged users (f_bavail), not f_bfree: the blocks reserved for root
// are not ours to fill, and available space is also what the kubelet's
// nodefs.available eviction signal watches.
func Statfs(dir string) (FSStat, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return FSStat{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	// f_blocks and f_bavail are counted in fragments of f_frsize.
	unit := int64(st.Frsize) //nolint:unconvert // int32 on some architectures
	if unit <= 0 {
		unit = int64(st.Bsize) //nolint:unconvert // int32 on some architectures
	}
	return FSStat{
		Total: int64(st.Blocks) * unit,
		Free:  int64(st.Bavail) * unit,
	}, nil
}
