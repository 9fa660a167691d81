package corefile

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// This file builds small synthetic ELF cores with the kernel's layouts, for the
// architectures and corruptions a real crash on the test machine cannot produce.

var le = binary.LittleEndian

type synthNote struct {
	name string
	typ  uint32
	desc []byte
}

type synthLoad struct {
	vaddr uint64
	data  []byte
	memsz uint64 // 0 means len(data)
}

type synthCore struct {
	is32    bool
	machine elf.Machine
	etype   elf.Type // 0 means ET_CORE
	notes   []synthNote
	loads   []synthLoad
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func encodeNotes(notes []synthNote) []byte {
	var out []byte
	for _, n := range notes {
		name := append([]byte(n.name), 0)
		out = le.AppendUint32(out, uint32(len(name)))
		out = le.AppendUint32(out, uint32(len(n.desc)))
		out = le.AppendUint32(out, n.typ)
		out = pad4(append(out, name...))
		out = pad4(append(out, n.desc...))
	}
	return out
}

// bytes lays out: ELF header, program headers (one PT_NOTE, then the PT_LOADs), the
// note segment, then each load's data.
func (s synthCore) bytes() []byte {
	etype := s.etype
	if etype == 0 {
		etype = elf.ET_CORE
	}
	hsize, phsize := 64, 56
	if s.is32 {
		hsize, phsize = 52, 32
	}
	notes := encodeNotes(s.notes)
	nph := 1 + len(s.loads)
	noteOff := hsize + nph*phsize
	dataOff := noteOff + len(notes)
	var b bytes.Buffer
	ident := []byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if s.is32 {
		ident[elf.EI_CLASS] = byte(elf.ELFCLASS32)
	}
	b.Write(ident)
	w16 := func(v uint16) { b.Write(le.AppendUint16(nil, v)) }
	w32 := func(v uint32) { b.Write(le.AppendUint32(nil, v)) }
	w64 := func(v uint64) { b.Write(le.AppendUint64(nil, v)) }
	wAddr := func(v uint64) {
		if s.is32 {
			w32(uint32(v))
		} else {
			w64(v)
		}
	}
	w16(uint16(etype))
	w16(uint16(s.machine))
	w32(1)
	wAddr(0)             // entry
	wAddr(uint64(hsize)) // phoff
	wAddr(0)             // shoff
	w32(0)               // flags
	w16(uint16(hsize))   // ehsize
	w16(uint16(phsize))  // phentsize
	w16(uint16(nph))     // phnum
	w16(0)               // shentsize
	w16(0)               // shnum
	w16(0)               // shstrndx
	phdr := func(typ elf.ProgType, off, vaddr, filesz, memsz, align uint64) {
		if s.is32 {
			w32(uint32(typ))
			w32(uint32(off))
			w32(uint32(vaddr))
			w32(0)
			w32(uint32(filesz))
			w32(uint32(memsz))
			w32(4)
			w32(uint32(align))
			return
		}
		w32(uint32(typ))
		w32(4)
		w64(off)
		w64(vaddr)
		w64(0)
		w64(filesz)
		w64(memsz)
		w64(align)
	}
	phdr(elf.PT_NOTE, uint64(noteOff), 0, uint64(len(notes)), 0, 4)
	off := uint64(dataOff)
	for _, l := range s.loads {
		memsz := l.memsz
		if memsz == 0 {
			memsz = uint64(len(l.data))
		}
		phdr(elf.PT_LOAD, off, l.vaddr, uint64(len(l.data)), memsz, 0x1000)
		off += uint64(len(l.data))
	}
	b.Write(notes)
	for _, l := range s.loads {
		b.Write(l.data)
	}
	return b.Bytes()
}

// prstatus64 is struct elf_prstatus on a 64-bit kernel with nregs registers.
func prstatus64(sig int16, pid int32, nregs int, regs map[int]uint64) []byte {
	d := make([]byte, 112+nregs*8+8)
	le.PutUint32(d[0:], uint32(sig)) // pr_info.si_signo
	le.PutUint16(d[12:], uint16(sig))
	le.PutUint32(d[32:], uint32(pid))
	for i, v := range regs {
		le.PutUint64(d[112+i*8:], v)
	}
	return d
}

// prstatus386 is struct elf_prstatus on i386 (17 registers, 144 bytes).
func prstatus386(sig int16, pid int32, eip uint32) []byte {
	d := make([]byte, 144)
	le.PutUint16(d[12:], uint16(sig))
	le.PutUint32(d[24:], uint32(pid))
	le.PutUint32(d[72+12*4:], eip)
	return d
}

func fixedString(s string, n int) []byte {
	b := make([]byte, n)
	copy(b, s)
	return b
}

// prpsinfo64 is struct elf_prpsinfo on a 64-bit kernel (136 bytes).
func prpsinfo64(uid, gid uint32, pid int32, fname, args string) []byte {
	d := make([]byte, 136)
	le.PutUint32(d[16:], uid)
	le.PutUint32(d[20:], gid)
	le.PutUint32(d[24:], uint32(pid))
	copy(d[40:56], fixedString(fname, 16))
	copy(d[56:136], fixedString(args, 80))
	return d
}

// prpsinfo386 is struct elf_prpsinfo on i386, whose uid/gid are 16 bits (124 bytes).
func prpsinfo386(uid, gid uint16, pid int32, fname, args string) []byte {
	d := make([]byte, 124)
	le.PutUint16(d[8:], uid)
	le.PutUint16(d[10:], gid)
	le.PutUint32(d[12:], uint32(pid))
	copy(d[28:44], fixedString(fname, 16))
	copy(d[44:124], fixedString(args, 80))
	return d
}

func siginfo64(signo, code int32, addr uint64) []byte {
	d := make([]byte, 128)
	le.PutUint32(d[0:], uint32(signo))
	le.PutUint32(d[8:], uint32(code))
	le.PutUint64(d[16:], addr)
	return d
}

func siginfo32(signo, code int32, addr uint32) []byte {
	d := make([]byte, 128)
	le.PutUint32(d[0:], uint32(signo))
	le.PutUint32(d[8:], uint32(code))
	le.PutUint32(d[12:], addr)
	return d
}

func words(is32 bool, vs ...uint64) []byte {
	var d []byte
	for _, v := range vs {
		if is32 {
			d = le.AppendUint32(d, uint32(v))
		} else {
			d = le.AppendUint64(d, v)
		}
	}
	return d
}

// fileNote is NT_FILE with 4 KiB pages.
func fileNote(is32 bool, maps []Mapping) []byte {
	vs := []uint64{uint64(len(maps)), 4096}
	for _, m := range maps {
		vs = append(vs, m.Start, m.End, m.FileOffset/4096)
	}
	d := words(is32, vs...)
	for _, m := range maps {
		d = append(append(d, m.Path...), 0)
	}
	return d
}

// moduleHeaderPage is the first page of a 64-bit ELF shared object whose PT_NOTE (at
// file offset 0x200) holds a GNU build-id, as it appears in process memory.
func moduleHeaderPage(buildID []byte) []byte {
	page := make([]byte, 0x1000)
	copy(page, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le.PutUint16(page[16:], uint16(elf.ET_DYN))
	le.PutUint16(page[18:], uint16(elf.EM_X86_64))
	le.PutUint64(page[32:], 64) // phoff
	le.PutUint16(page[54:], 56) // phentsize
	le.PutUint16(page[56:], 2)  // phnum
	note := encodeNotes([]synthNote{{"GNU", ntGNUBuildID, buildID}})
	ph := page[64:]
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint64(ph[32:], 0x1000)
	ph = page[64+56:]
	le.PutUint32(ph[0:], uint32(elf.PT_NOTE))
	le.PutUint64(ph[8:], 0x200)
	le.PutUint64(ph[32:], uint64(len(note)))
	le.PutUint64(ph[48:], 4)
	copy(page[0x200:], note)
	return page
}

var synthBuildID = []byte{0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}

// synthX86 is a plausible x86-64 core: a PIE "app" crashed in its text at 0x401234
// with a read of address 0x10, launched through the symlink /usr/bin/app-link.
func synthX86() synthCore {
	maps := []Mapping{
		{Start: 0x400000, End: 0x401000, FileOffset: 0, Path: "/usr/bin/app"},
		{Start: 0x401000, End: 0x405000, FileOffset: 0x1000, Path: "/usr/bin/app"},
		{Start: 0x7f0000000000, End: 0x7f0000001000, FileOffset: 0, Path: "/usr/lib/libc.so.6 (deleted)"},
	}
	return synthCore{
		machine: elf.EM_X86_64,
		notes: []synthNote{
			// A thread other than the main one crashed: its pr_pid is its TID.
			{"CORE", ntPrstatus, prstatus64(11, 4250, 27, map[int]uint64{16: 0x401234})},
			{"CORE", ntPrpsinfo, prpsinfo64(1000, 2000, 4242, "app-link", "/usr/bin/app-link --serve  ")},
			{"CORE", ntSiginfo, siginfo64(11, 1, 0x10)},
			{"CORE", ntAuxv, words(false, atPhdr, 0x400040, atExecfn, 0x7ffd0000, atNull, 0)},
			{"CORE", ntFile, fileNote(false, maps)},
			{"CORE", 2, make([]byte, 512)}, // NT_FPREGSET
			{"LINUX", 0x202, make([]byte, 100)},
			{"CORE", ntPrstatus, prstatus64(0, 4243, 27, map[int]uint64{16: 0x7f0000000100})},
		},
		loads: []synthLoad{
			{vaddr: 0x400000, data: moduleHeaderPage(synthBuildID)},
			{vaddr: 0x401000, memsz: 0x4000},
			{vaddr: 0x7ffd0000, data: append([]byte("/usr/bin/app-link"), 0, 'X')},
		},
	}
}

// synthARM64 is the same crash on arm64, where pc is register 32.
func synthARM64() synthCore {
	s := synthX86()
	s.machine = elf.EM_AARCH64
	s.notes[0] = synthNote{"CORE", ntPrstatus, prstatus64(11, 4250, 34, map[int]uint64{31: 0x7ffc0000, 32: 0x401234})}
	s.notes[7] = synthNote{"CORE", ntPrstatus, prstatus64(0, 4243, 34, nil)}
	return s
}

// synth386 is a 32-bit i386 core.
func synth386() synthCore {
	maps := []Mapping{{Start: 0x8048000, End: 0x8050000, FileOffset: 0, Path: "/bin/old"}}
	return synthCore{
		is32:    true,
		machine: elf.EM_386,
		notes: []synthNote{
			{"CORE", ntPrstatus, prstatus386(7, 77, 0x8048123)},
			{"CORE", ntPrpsinfo, prpsinfo386(5, 6, 77, "old", "old -x")},
			{"CORE", ntSiginfo, siginfo32(7, 2, 0xdeadbee0)},
			{"CORE", ntAuxv, words(true, atEntry, 0x8048100, atNull, 0)},
			{"CORE", ntFile, fileNote(true, maps)},
		},
	}
}
