//go:build !linux

package nodeguard

import (
	"errors"
	"fmt"
)

// Statfs is only implemented on Linux, where the agent runs; development builds
// elsewhere can still use limits without a free-space part, or inject Statfs.
func Statfs(dir string) (FSStat, error) {
	return FSStat{}, fmt.Errorf("statfs %s: %w", dir, errors.ErrUnsupported)
}
