package corefile

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"io"
)

// Process is a core read for unwinding: its notes (Core), where the dumped
// memory sits in the file, and where each thread's registers are. Reading
// memory and registers is left to the caller, which decides how much of
// either it can afford.
type Process struct {
	*Core
	// ByteOrder and Is64 are the core's ELF data encoding and class.
	ByteOrder binary.ByteOrder
	Is64      bool
	// ELFMachine is e_machine.
	ELFMachine elf.Machine
	// Segments are the PT_LOAD segments that have file data, by address.
	Segments []Segment
	// ThreadNotes are the NT_PRSTATUS descriptors in the order of the notes:
	// the kernel writes the thread that took the signal first. At most the
	// maxThreads ReadProcess was given; Core.Threads counts them all.
	ThreadNotes []NoteRef
	cr          *coreReader
}

// Segment is a PT_LOAD segment's address, size in the file and file offset.
type Segment struct{ Vaddr, Filesz, Offset uint64 }

// NoteRef is where a note's descriptor is in the file.
type NoteRef struct{ Offset, Size uint64 }

// ReadProcess is ReadCore that also keeps the PT_LOAD segments and the
// places of the first maxThreads NT_PRSTATUS notes. Its bounds are
// ReadCore's plus maxThreads small records.
func ReadProcess(r io.ReaderAt, size int64, maxThreads int) (*Process, error) {
	cr, err := readCore(r, size, maxThreads)
	if cr == nil {
		return nil, err
	}
	p := &Process{Core: cr.c, ByteOrder: cr.bo, Is64: cr.is64, ELFMachine: cr.mach, ThreadNotes: cr.threadNotes, cr: cr}
	p.Segments = make([]Segment, len(cr.loads))
	for i, l := range cr.loads {
		p.Segments[i] = Segment{Vaddr: l.vaddr, Filesz: l.filesz, Offset: l.off}
	}
	return p, errors.Join(cr.errs...)
}

// BuildID is the GNU build-id of the module behind mapping m, read from its
// ELF headers in dumped memory ("" when the core does not hold them).
func (p *Process) BuildID(m Mapping) string { return p.cr.buildID(p.Mappings, m) }

// ModuleName is a mapping path's base name without " (deleted)".
func ModuleName(path string) string { return moduleName(path) }
