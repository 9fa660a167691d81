// Package corepattern sets the kernel's core_pattern when a CoreDumpPolicy
// says corePattern: Manage or Pipe, and puts the administrator's value back
// when the agent stops. For a pipe it also sets core_pipe_limit (PipeLimit),
// so that the kernel keeps a crashed process's /proc/<pid> while the
// receiver runs, and restores that too.
//
// It owns the sysctl files it is given (normally
// /proc/sys/kernel/core_pattern and core_pipe_limit) and nothing else: it
// does not create the core directory, touch other sysctls such as
// core_uses_pid or suid_dumpable, or change RLIMIT_CORE. Set writes only an
// absolute file path of fewer than 128 bytes and SetPipe only a pipe to an
// absolute program; sockets ("@...") are an administrator's choice, never the
// agent's.
//
// The previous values live in memory and, with WithState, in files in a
// directory that only root can change (agent/hostdir), so that the agent
// after one that was SIGKILLed still restores the administrator's values. A
// directory or file someone else made is refused, never read. Restore writes
// a pipe back only when the program it runs, and every directory on its path,
// are root's and writable by no one else; otherwise it leaves the managed
// pattern and returns ErrUnsafeHelper. The agent's main must call Restore
// when it stops (in a defer, and when its signal context is cancelled).
package corepattern
