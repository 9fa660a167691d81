package analyze_test

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"

	"github.com/coredog/coredog/agent/analyze"
)

// synthThread is one thread of a synthesized core: its ID and registers in
// elf_gregset_t order (x86-64 user_regs_struct, arm64 user_pt_regs).
type synthThread struct {
	tid  int32
	regs []uint64
	// prstatusSize overrides the descriptor size (a forged note).
	prstatusSize int
}

// synthSeg is dumped memory at an address.
type synthSeg struct {
	vaddr uint64
	data  []byte
}

// synthMapping is an NT_FILE entry.
type synthMapping struct {
	start, end, pgoff uint64
	path              string
}

// synthCore writes an ELF64 little-endian core: one PT_NOTE (NT_PRSTATUS per
// thread, NT_FILE) and a PT_LOAD per segment.
func synthCore(machine elf.Machine, threads []synthThread, segs []synthSeg, maps []synthMapping) []byte {
	le := binary.LittleEndian
	var notes bytes.Buffer
	note := func(typ uint32, desc []byte) {
		name := []byte("CORE\x00\x00\x00\x00")
		_ = binary.Write(&notes, le, uint32(5))
		_ = binary.Write(&notes, le, uint32(len(desc)))
		_ = binary.Write(&notes, le, typ)
		notes.Write(name)
		notes.Write(desc)
		for notes.Len()%4 != 0 {
			notes.WriteByte(0)
		}
	}
	nregs := 27
	if machine == elf.EM_AARCH64 {
		nregs = 34
	}
	for _, t := range threads {
		d := make([]byte, 112+8*nregs+8)
		le.PutUint32(d[32:], uint32(t.tid))
		for i, r := range t.regs {
			le.PutUint64(d[112+8*i:], r)
		}
		if t.prstatusSize > 0 {
			d = d[:t.prstatusSize]
		}
		note(1, d)
	}
	if len(maps) > 0 {
		var f bytes.Buffer
		_ = binary.Write(&f, le, uint64(len(maps)))
		_ = binary.Write(&f, le, uint64(4096))
		for _, m := range maps {
			_ = binary.Write(&f, le, m.start)
			_ = binary.Write(&f, le, m.end)
			_ = binary.Write(&f, le, m.pgoff)
		}
		for _, m := range maps {
			f.WriteString(m.path)
			f.WriteByte(0)
		}
		note(0x46494c45, f.Bytes())
	}
	phnum := 1 + len(segs)
	off := uint64(64 + 56*phnum)
	var out bytes.Buffer
	hdr := make([]byte, 64)
	copy(hdr, elf.ELFMAG)
	hdr[elf.EI_CLASS], hdr[elf.EI_DATA], hdr[elf.EI_VERSION] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), 1
	le.PutUint16(hdr[16:], uint16(elf.ET_CORE))
	le.PutUint16(hdr[18:], uint16(machine))
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[32:], 64)
	le.PutUint16(hdr[52:], 64)
	le.PutUint16(hdr[54:], 56)
	le.PutUint16(hdr[56:], uint16(phnum))
	out.Write(hdr)
	ph := func(typ uint32, o, vaddr, size uint64) {
		p := make([]byte, 56)
		le.PutUint32(p[0:], typ)
		le.PutUint64(p[8:], o)
		le.PutUint64(p[16:], vaddr)
		le.PutUint64(p[32:], size)
		le.PutUint64(p[40:], size)
		le.PutUint64(p[48:], 4)
		out.Write(p)
	}
	ph(uint32(elf.PT_NOTE), off, 0, uint64(notes.Len()))
	dataOff := off + uint64(notes.Len())
	for _, s := range segs {
		ph(uint32(elf.PT_LOAD), dataOff, s.vaddr, uint64(len(s.data)))
		dataOff += uint64(len(s.data))
	}
	out.Write(notes.Bytes())
	for _, s := range segs {
		out.Write(s.data)
	}
	return out.Bytes()
}

// amd64Regs is a user_regs_struct with rip, rsp and rbp set.
func amd64Regs(rip, rsp, rbp uint64) []uint64 {
	r := make([]uint64, 27)
	r[16], r[19], r[4] = rip, rsp, rbp
	return r
}

// arm64Regs is a user_pt_regs with pc, sp, x29 (fp) and x30 (lr) set.
func arm64Regs(pc, sp, fp, lr uint64) []uint64 {
	r := make([]uint64, 34)
	r[32], r[31], r[29], r[30] = pc, sp, fp, lr
	return r
}

// words lays out 64-bit words.
func words(ws ...uint64) []byte {
	b := make([]byte, 8*len(ws))
	for i, w := range ws {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b
}

// noModules opens nothing.
type noModules struct{}

func (noModules) Open(analyze.ModuleRef) (analyze.Module, error) {
	return nil, errors.New("no modules here")
}
