// Package corepattern sets the kernel's core_pattern when a CoreDumpPolicy
// says corePattern: Manage, and puts the administrator's value back when the
// agent stops.
//
// It owns the one sysctl file it is given (normally
// /proc/sys/kernel/core_pattern) and nothing else: it does not create the core
// directory, touch other sysctls such as core_uses_pid or suid_dumpable, or
// change RLIMIT_CORE. It only ever writes an absolute file path of fewer than
// 128 bytes; pipes ("|helper") and sockets ("@...") are an administrator's
// choice, never the agent's, though Restore writes back whatever was there.
//
// The previous value lives only in memory. The agent's main must call Restore
// when it stops (in a defer, and when its signal context is cancelled); an
// agent killed with SIGKILL cannot, and on its next start it will find its own
// pattern in the file and take it for the original. Set logs when it sees that.
package corepattern
