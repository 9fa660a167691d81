// Package buildid reads the GNU build-id of an ELF file (an executable or a
// shared library) and whether the file carries DWARF, with every read
// bounded: the files are chosen by the crashed container and are hostile.
// The agent checks a module it collects against the build-id its core names
// with it, and the manager checks every file an agent sends before storing
// it under that build-id. It also owns the shape of a build-id (Valid) and
// the debuginfod layout of a storage location (Key).
//
// It reads only the ELF header, the program and section headers, the note
// segments and the section-name table; it never loads a whole file and must
// not open, write or fetch anything itself.
package buildid

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Bounds on what Read reads.
const (
	// MaxLen is the longest build-id in hexadecimal (the API's bound of
	// status.analysis.modules[].buildID). Linkers write 20 bytes (SHA-1),
	// 16 (MD5 or Go's default) or 8 (xxhash).
	MaxLen = 128
	// minLen: a build-id of fewer than 4 bytes names nothing.
	minLen = 8
	// maxHeaders bounds program and section headers read; real modules have
	// a few dozen of each.
	maxHeaders = 4096
	// maxNote bounds a note segment or section read.
	maxNote = 64 << 10
	// maxNotes bounds the note segments and sections scanned.
	maxNotes = 32
	// maxNames bounds the section-name table.
	maxNames = 1 << 20
	// ntGNUBuildID is NT_GNU_BUILD_ID (elf.h); debug/elf does not name it.
	ntGNUBuildID = 3
)

// Sentinel errors.
var (
	// ErrNotELF: the file is not an ELF file.
	ErrNotELF = errors.New("not an ELF file")
	// ErrNoBuildID: the file has no GNU build-id note.
	ErrNoBuildID = errors.New("no GNU build-id note")
	// ErrMismatch: the file's build-id is not the one expected.
	ErrMismatch = errors.New("the file's build-id is not the expected one")
)

// Info is what Read found.
type Info struct {
	// ID is the GNU build-id in lower-case hexadecimal.
	ID string
	// DebugInfo is true when a section .debug_info (or .zdebug_info) with
	// contents is in the file.
	DebugInfo bool
}

// Valid reports whether id has the shape of a build-id: lower-case
// hexadecimal, an even number of digits, 8 to MaxLen of them. Anything else
// (a '/', "..", upper case) is never used as a file name or a key.
func Valid(id string) bool {
	if len(id) < minLen || len(id) > MaxLen || len(id)%2 != 0 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Debuginfod layout of a storage location: a module's file is stored under
// the location's prefix at Key(id, Executable), and once more at Key(id,
// DebugInfo) when it holds DWARF, as debuginfod serves
// /buildid/<id>/executable and /buildid/<id>/debuginfo.
const (
	Executable = "executable"
	DebugInfo  = "debuginfo"
	// Dir is the top of the layout under the location's prefix.
	Dir = "buildid/"
)

// Key is the key of a build-id's file of kind (Executable or DebugInfo),
// relative to the storage location's prefix. id must be Valid.
func Key(id, kind string) string { return Dir + id + "/" + kind }

// KeyFor is Key for an id and kind from outside (a debuginfod request, a
// CoreDump's status): id in either case; ok is false when it is not a
// build-id or kind is neither Executable nor DebugInfo.
func KeyFor(id, kind string) (key string, ok bool) {
	id = strings.ToLower(id)
	if !Valid(id) || (kind != Executable && kind != DebugInfo) {
		return "", false
	}
	return Key(id, kind), true
}

// Verify reads the build-id of r and fails with ErrMismatch when it is not
// want.
func Verify(r io.ReaderAt, size int64, want string) (Info, error) {
	info, err := Read(r, size)
	if err != nil {
		return info, err
	}
	if info.ID != want {
		return info, ErrMismatch
	}
	return info, nil
}

type reader struct {
	r    io.ReaderAt
	size int64
	bo   binary.ByteOrder
	is64 bool
}

func (rd *reader) read(off, n uint64) ([]byte, bool) {
	if n == 0 || off > uint64(rd.size) || n > uint64(rd.size)-off {
		return nil, false
	}
	b := make([]byte, n)
	if _, err := rd.r.ReadAt(b, int64(off)); err != nil {
		return nil, false
	}
	return b, true
}

// section is the part of a section header Read uses.
type section struct {
	name            uint32
	typ             elf.SectionType
	off, size, algn uint64
}

// header is what Read uses of the ELF header.
type header struct {
	phoff, shoff, phent, phnum, shent, shnum, shstrndx uint64
}

// readHeader checks the ELF identification and reads the header.
func (rd *reader) readHeader() (header, error) {
	var h header
	hdr, ok := rd.read(0, 64)
	if !ok {
		hdr, ok = rd.read(0, 52)
	}
	if !ok || !bytes.HasPrefix(hdr, []byte(elf.ELFMAG)) {
		return h, ErrNotELF
	}
	switch elf.Data(hdr[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		rd.bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		rd.bo = binary.BigEndian
	default:
		return h, fmt.Errorf("%w: unknown data encoding", ErrNotELF)
	}
	switch elf.Class(hdr[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
		if len(hdr) < 64 {
			return h, fmt.Errorf("%w: header cut off", ErrNotELF)
		}
		rd.is64 = true
	case elf.ELFCLASS32:
	default:
		return h, fmt.Errorf("%w: unknown class", ErrNotELF)
	}
	bo := rd.bo
	if rd.is64 {
		h.phoff, h.shoff = bo.Uint64(hdr[32:]), bo.Uint64(hdr[40:])
		h.phent, h.phnum = uint64(bo.Uint16(hdr[54:])), uint64(bo.Uint16(hdr[56:]))
		h.shent, h.shnum, h.shstrndx = uint64(bo.Uint16(hdr[58:])), uint64(bo.Uint16(hdr[60:])), uint64(bo.Uint16(hdr[62:]))
	} else {
		h.phoff, h.shoff = uint64(bo.Uint32(hdr[28:])), uint64(bo.Uint32(hdr[32:]))
		h.phent, h.phnum = uint64(bo.Uint16(hdr[42:])), uint64(bo.Uint16(hdr[44:]))
		h.shent, h.shnum, h.shstrndx = uint64(bo.Uint16(hdr[46:])), uint64(bo.Uint16(hdr[48:])), uint64(bo.Uint16(hdr[50:]))
	}
	return h, nil
}

// progNoteID scans the PT_NOTE segments for the build-id; scanned counts
// the segments looked at.
func (rd *reader) progNoteID(h header, scanned *int) string {
	minPh := uint64(32)
	if rd.is64 {
		minPh = 56
	}
	if h.phent < minPh || h.phnum == 0 || h.phnum > maxHeaders {
		return ""
	}
	phdrs, ok := rd.read(h.phoff, h.phnum*h.phent)
	if !ok {
		return ""
	}
	bo := rd.bo
	for i := uint64(0); i < h.phnum && *scanned < maxNotes; i++ {
		p := phdrs[i*h.phent:]
		if elf.ProgType(bo.Uint32(p)) != elf.PT_NOTE {
			continue
		}
		var off, sz, align uint64
		if rd.is64 {
			off, sz, align = bo.Uint64(p[8:]), bo.Uint64(p[32:]), bo.Uint64(p[48:])
		} else {
			off, sz, align = uint64(bo.Uint32(p[4:])), uint64(bo.Uint32(p[16:])), uint64(bo.Uint32(p[28:]))
		}
		*scanned++
		if id := rd.noteID(off, sz, align); id != "" {
			return id
		}
	}
	return ""
}

// Read returns the GNU build-id of the ELF file r of size bytes, from its
// note segments, else its note sections (Go's linker may leave the build-id
// note out of PT_NOTE), and whether it carries DWARF.
func Read(r io.ReaderAt, size int64) (Info, error) {
	rd := &reader{r: r, size: size}
	h, err := rd.readHeader()
	if err != nil {
		return Info{}, err
	}
	var info Info
	scanned := 0
	info.ID = rd.progNoteID(h, &scanned)
	// Section headers: SHT_NOTE sections and .debug_info.
	secs := rd.sections(h.shoff, h.shent, h.shnum)
	var names []byte
	if h.shstrndx < uint64(len(secs)) && secs[h.shstrndx].typ == elf.SHT_STRTAB && secs[h.shstrndx].size <= maxNames {
		names, _ = rd.read(secs[h.shstrndx].off, secs[h.shstrndx].size)
	}
	for _, s := range secs {
		if s.typ == elf.SHT_NOTE && info.ID == "" && scanned < maxNotes {
			scanned++
			info.ID = rd.noteID(s.off, s.size, s.algn)
		}
		if s.typ != elf.SHT_NOBITS && s.size > 0 && names != nil {
			if n := cString(names, s.name); n == ".debug_info" || n == ".zdebug_info" {
				info.DebugInfo = true
			}
		}
	}
	if info.ID == "" {
		return info, ErrNoBuildID
	}
	return info, nil
}

// sections reads the section headers; none when they are absent or out of
// bounds.
func (rd *reader) sections(shoff, shent, shnum uint64) []section {
	minSh := uint64(40)
	if rd.is64 {
		minSh = 64
	}
	if shoff == 0 || shent < minSh || shnum == 0 || shnum > maxHeaders {
		return nil
	}
	raw, ok := rd.read(shoff, shnum*shent)
	if !ok {
		return nil
	}
	bo := rd.bo
	out := make([]section, 0, shnum)
	for i := range shnum {
		p := raw[i*shent:]
		s := section{name: bo.Uint32(p), typ: elf.SectionType(bo.Uint32(p[4:]))}
		if rd.is64 {
			s.off, s.size, s.algn = bo.Uint64(p[24:]), bo.Uint64(p[32:]), bo.Uint64(p[48:])
		} else {
			s.off, s.size, s.algn = uint64(bo.Uint32(p[16:])), uint64(bo.Uint32(p[20:])), uint64(bo.Uint32(p[32:]))
		}
		out = append(out, s)
	}
	return out
}

// noteID scans the notes at off for NT_GNU_BUILD_ID owned by "GNU".
func (rd *reader) noteID(off, size, align uint64) string {
	if size == 0 || size > maxNote {
		return ""
	}
	d, ok := rd.read(off, size)
	if !ok {
		return ""
	}
	return FindNote(d, rd.bo, align)
}

// FindNote scans a run of ELF notes for NT_GNU_BUILD_ID owned by "GNU" and
// returns its descriptor in hexadecimal, "" when there is none or it is not
// a Valid build-id. align is the segment's alignment (8, else 4).
func FindNote(d []byte, bo binary.ByteOrder, align uint64) string {
	a := uint64(4)
	if align == 8 {
		a = 8
	}
	n := uint64(len(d))
	for pos := uint64(0); pos+12 <= n; {
		namesz, descsz, typ := uint64(bo.Uint32(d[pos:])), uint64(bo.Uint32(d[pos+4:])), bo.Uint32(d[pos+8:])
		nameOff := pos + 12
		if namesz > n || descsz > n {
			return ""
		}
		descOff := nameOff + alignUp(namesz, a)
		if descOff+descsz > n || nameOff+namesz > n {
			return ""
		}
		if typ == ntGNUBuildID && string(bytes.TrimRight(d[nameOff:nameOff+namesz], "\x00")) == "GNU" {
			if id := hex.EncodeToString(d[descOff : descOff+descsz]); Valid(id) {
				return id
			}
			return ""
		}
		pos = descOff + alignUp(descsz, a)
	}
	return ""
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

func cString(b []byte, off uint32) string {
	if uint64(off) >= uint64(len(b)) {
		return ""
	}
	b = b[off:]
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
