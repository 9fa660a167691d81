// Package analyze computes, on the node, the backtrace of every thread of a
// core dump: registers from each NT_PRSTATUS, stack memory from the core's
// PT_LOAD segments, call frame information (.eh_frame through .eh_frame_hdr,
// .eh_frame, .debug_frame) from the mapped binaries, with a frame-pointer
// fallback, on x86-64 and arm64. Frames are symbolized from .symtab or
// .dynsym, DWARF line tables when present and Go's pclntab, and C++ and Rust
// names are demangled.
//
// The package owns the analysis and the crash signature made from its frames.
// It reads binaries only through an Opener and uses a binary only when its
// GNU build-id is the one the core recorded for that mapping. It must not
// write anything, touch the network, or follow a path a process chose outside
// the root it is given (see HostRoot).
//
// Everything it reads is hostile: the core is written by whatever crashed and
// the binaries are chosen by the container. Every read is bounded by a
// constant (pages of memory, bytes of a section, frames per thread, threads,
// modules), the libraries it hands bytes to run under recover, and any bound
// that is hit makes the outcome Partial with a reason instead of an error.
package analyze
