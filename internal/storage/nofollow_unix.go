//go:build !windows

package storage

import "syscall"

// oNoFollow makes an open fail on a symbolic link at the last component.
const oNoFollow = syscall.O_NOFOLLOW
