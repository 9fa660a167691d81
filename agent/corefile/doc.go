// Package corefile describes a core dump from what can be learned without running
// anything: its file name (parsed against the node's core_pattern) and the notes of
// its ELF image (signal, fault address, threads, executable, faulting module, build-id),
// plus the owning container from the crashing process's /proc/<pid>/cgroup contents.
//
// Everything here is a pure function of bytes handed in by the caller. The package owns
// parsing and the crash signature; it must not touch the file system, /proc, the
// kernel's core_pattern or the network, and it must not keep state between calls. All
// inputs are untrusted (a core is written by whatever process crashed, and a name or a
// cgroup path can be chosen by a hostile workload), so every parser is bounded in time
// and memory and reports malformed input as an error rather than panicking.
package corefile
