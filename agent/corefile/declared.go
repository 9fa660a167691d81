package corefile

import (
	"bytes"
	"debug/elf"
	"io"
	"math"
)

// elfHeader32 is the size of the smallest ELF header.
const elfHeader32 = 52

// DeclaredSize returns the size a core file will have once the kernel has
// written all of it, judged from its first size bytes, and false when those
// bytes say nothing about it.
//
// The kernel writes a core front to back: the ELF header, then the program
// headers (e_phoff is the header's own size), then the notes and the
// segments they describe, and last, for a process with more than 65534
// mappings, one section header. So the end of the furthest of these is the
// final size, known as soon as the headers are on disk, and a file shorter
// than that is still being written or was cut (RLIMIT_CORE, a full disk). A
// file that is shorter than an ELF header but is its beginning (an empty
// one included) declares at least a header.
//
// Only a layout the kernel writes counts: a file that is not an ELF core,
// or whose program headers are not right after its ELF header, declares
// nothing, and neither does one that cannot be read. Reading is bounded as
// in ReadCore: the ELF header and at most maxPhnum program headers. The
// result is what the file claims, not a fact: a hostile core can claim any
// size up to math.MaxInt64.
func DeclaredSize(r io.ReaderAt, size int64) (int64, bool) {
	if size < 0 {
		size = 0
	}
	var head [64]byte
	n, err := r.ReadAt(head[:min(size, int64(len(head)))], 0)
	if err != nil && err != io.EOF {
		return 0, false
	}
	got := head[:n]
	if n < len(elf.ELFMAG) {
		return elfHeader32, bytes.HasPrefix([]byte(elf.ELFMAG), got)
	}
	if !bytes.HasPrefix(got, []byte(elf.ELFMAG)) {
		return 0, false
	}
	if !kernelIdent(got) {
		return 0, false
	}
	hsize := elfHeader32
	if n > elf.EI_CLASS && elf.Class(got[elf.EI_CLASS]) == elf.ELFCLASS64 {
		hsize = 64
	}
	if n < hsize {
		return int64(hsize), true
	}
	cr := &coreReader{r: r, size: size, seen: map[uint32]bool{}}
	if _, err := cr.readHeaders(); err != nil || cr.ioErr || cr.c == nil {
		return 0, false
	}
	if cr.phoff != cr.hsize {
		return 0, false
	}
	end := max(cr.segEnd, cr.shEnd, cr.hsize)
	if end > math.MaxInt64 {
		return math.MaxInt64, true
	}
	return int64(end), true
}

// kernelIdent reports whether b, the first bytes of a file after the magic
// matched, can be the start of an ELF core header the kernel wrote: a known
// class and byte order, version 1, and (when that far) type ET_CORE. A text
// file that starts with "\x7fELF" is not held back for a header it will
// never get.
func kernelIdent(b []byte) bool {
	if len(b) > elf.EI_CLASS {
		if c := elf.Class(b[elf.EI_CLASS]); c != elf.ELFCLASS32 && c != elf.ELFCLASS64 {
			return false
		}
	}
	if len(b) > elf.EI_DATA {
		if d := elf.Data(b[elf.EI_DATA]); d != elf.ELFDATA2LSB && d != elf.ELFDATA2MSB {
			return false
		}
	}
	if len(b) > elf.EI_VERSION && elf.Version(b[elf.EI_VERSION]) != elf.EV_CURRENT {
		return false
	}
	if len(b) >= 18 {
		typ := uint16(b[16]) | uint16(b[17])<<8
		if elf.Data(b[elf.EI_DATA]) == elf.ELFDATA2MSB {
			typ = uint16(b[16])<<8 | uint16(b[17])
		}
		if elf.Type(typ) != elf.ET_CORE {
			return false
		}
	}
	return true
}
