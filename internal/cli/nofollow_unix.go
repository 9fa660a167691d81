//go:build !windows

package cli

import "syscall"

// oNoFollow keeps a file the plugin creates from being a planted symlink.
const oNoFollow = syscall.O_NOFOLLOW
