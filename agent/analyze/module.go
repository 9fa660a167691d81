package analyze

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"debug/gosym"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"

	"github.com/go-delve/delve/pkg/dwarf/frame"
	"github.com/ianlancetaylor/demangle"
)

// Bounds on what is read from one module file.
const (
	// maxSections and maxShstrtab bound what debug/elf reads when it opens a
	// file: every section header and the section-name table.
	maxSections = 4096
	maxShstrtab = 1 << 20
	// maxCFISection bounds a whole .eh_frame or .debug_frame parsed at once
	// (when .eh_frame_hdr cannot lead to one entry).
	maxCFISection = 8 << 20
	// maxCFIEntry bounds one CIE or FDE read through .eh_frame_hdr.
	maxCFIEntry = 64 << 10
	// maxSymtab bounds a symbol table section (24 bytes a symbol).
	maxSymtab = 16 << 20
	// maxDWARF bounds the DWARF sections loaded for line tables.
	maxDWARF = 32 << 20
	// maxPclntab bounds a Go pclntab.
	maxPclntab = 32 << 20
	// maxLineRows bounds the line-table rows walked for one lookup.
	maxLineRows = 1 << 20
	// maxName bounds a function name kept (the API allows 512).
	maxName = 512
)

// module is one mapped ELF file, opened and checked, with what was loaded
// from it so far. Every loader runs once and remembers its failure.
type module struct {
	name  string
	path  string
	build string
	f     Module
	ef    *elf.File
	err   error
	order binary.ByteOrder

	cfiTried, dfTried bool
	ehFDEs, dbgFDEs   frame.FrameDescriptionEntries
	symsTried         bool
	syms              []symbol
	dwarfTried        bool
	dw                *dwarf.Data
	goTried           bool
	gotab             *gosym.Table
}

type symbol struct {
	addr, size uint64
	name       string
}

// openModule opens and verifies the file behind ref.
func openModule(o Opener, ref ModuleRef) *module {
	m := &module{name: ModuleBase(ref.Path), path: ref.Path, build: ref.BuildID}
	if ref.BuildID == "" {
		m.err = errors.New("the core holds no build-id for it")
		return m
	}
	f, err := o.Open(ref)
	if err != nil {
		m.err = fmt.Errorf("cannot open it: %w", err)
		return m
	}
	m.f = f
	if err := precheckELF(f); err != nil {
		m.err = err
		return m
	}
	ef, err := safeNewFile(f)
	if err != nil {
		m.err = fmt.Errorf("not a readable ELF file: %w", err)
		return m
	}
	m.ef, m.order = ef, ef.ByteOrder
	if id := fileBuildID(ef); id != ref.BuildID {
		m.err = errors.New("its build-id differs from the core's")
		m.ef = nil
	}
	return m
}

func (m *module) close() {
	if m.f != nil {
		m.f.Close()
	}
}

// ModuleBase is a mapping path's base name, without " (deleted)".
func ModuleBase(path string) string {
	path = strings.TrimSuffix(path, " (deleted)")
	return path[strings.LastIndexByte(path, '/')+1:]
}

func safeNewFile(r io.ReaderAt) (ef *elf.File, err error) {
	defer func() {
		if p := recover(); p != nil {
			ef, err = nil, fmt.Errorf("panic reading ELF: %v", p)
		}
	}()
	return elf.NewFile(r)
}

// precheckELF refuses files whose section headers or section-name table
// would make debug/elf allocate much: it reads both in full.
func precheckELF(f Module) error {
	var h [64]byte
	if n, _ := f.ReadAt(h[:], 0); n < 64 || !bytes.Equal(h[:4], []byte(elf.ELFMAG)) || elf.Class(h[elf.EI_CLASS]) != elf.ELFCLASS64 {
		return errors.New("not a 64-bit ELF file")
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if elf.Data(h[elf.EI_DATA]) == elf.ELFDATA2MSB {
		bo = binary.BigEndian
	}
	shoff, shentsize, shnum, shstrndx := bo.Uint64(h[40:]), uint64(bo.Uint16(h[58:])), uint64(bo.Uint16(h[60:])), uint64(bo.Uint16(h[62:]))
	if shnum == 0 {
		return nil
	}
	if shnum > maxSections || shentsize != 64 {
		return fmt.Errorf("%d section headers of %d bytes", shnum, shentsize)
	}
	if shstrndx >= shnum {
		return nil
	}
	var sh [64]byte
	if n, _ := f.ReadAt(sh[:], int64(shoff+shstrndx*shentsize)); n < 64 {
		return errors.New("section headers cut off")
	}
	if size := bo.Uint64(sh[32:]); size > maxShstrtab {
		return fmt.Errorf("section-name table of %d bytes", size)
	}
	return nil
}

// fileBuildID reads NT_GNU_BUILD_ID from the file's notes.
func fileBuildID(ef *elf.File) string {
	for _, p := range ef.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > 1<<16 {
			continue
		}
		d := make([]byte, p.Filesz)
		if _, err := p.ReadAt(d, 0); err != nil {
			continue
		}
		if id := noteBuildID(d, ef.ByteOrder, p.Align); id != "" {
			return id
		}
	}
	if s := ef.Section(".note.gnu.build-id"); s != nil && s.Size <= 1<<16 && s.Type != elf.SHT_NOBITS {
		if d, err := s.Data(); err == nil {
			return noteBuildID(d, ef.ByteOrder, s.Addralign)
		}
	}
	return ""
}

func noteBuildID(d []byte, bo binary.ByteOrder, align uint64) string {
	a := uint64(4)
	if align == 8 {
		a = 8
	}
	up := func(v uint64) uint64 { return (v + a - 1) &^ (a - 1) }
	for pos := uint64(0); pos+12 <= uint64(len(d)); {
		namesz, descsz, typ := uint64(bo.Uint32(d[pos:])), uint64(bo.Uint32(d[pos+4:])), bo.Uint32(d[pos+8:])
		nameOff := pos + 12
		descOff := nameOff + up(namesz)
		if namesz > uint64(len(d)) || descsz > uint64(len(d)) || descOff+descsz > uint64(len(d)) {
			return ""
		}
		if typ == 3 && string(bytes.TrimRight(d[nameOff:nameOff+namesz], "\x00")) == "GNU" && descsz > 0 {
			return hex.EncodeToString(d[descOff : descOff+descsz])
		}
		pos = descOff + up(descsz)
	}
	return ""
}

// bias is what to add to a link-time address of the module to get the
// run-time address, from a mapping of it: start is where file offset off
// is mapped.
func (m *module) bias(start, off uint64) (uint64, bool) {
	for _, p := range m.ef.Progs {
		if p.Type == elf.PT_LOAD && off >= p.Off && off-p.Off < max(p.Filesz, 1) {
			return start - (p.Vaddr + (off - p.Off)), true
		}
	}
	return 0, false
}

// readCode reads the module's bytes at link-time address addr from its file.
func (m *module) readCode(addr uint64, b []byte) bool {
	for _, p := range m.ef.Progs {
		if p.Type == elf.PT_LOAD && addr >= p.Vaddr && addr-p.Vaddr+uint64(len(b)) <= p.Filesz {
			n, _ := m.f.ReadAt(b, int64(p.Off+addr-p.Vaddr))
			return n == len(b)
		}
	}
	return false
}

// fde finds the frame description entry covering the link-time address pc.
func (m *module) fde(pc uint64) (*frame.FrameDescriptionEntry, error) {
	if fde, err := m.fdeFromHdr(pc); err == nil && fde != nil {
		return fde, nil
	}
	if !m.cfiTried {
		m.cfiTried = true
		if s := m.ef.Section(".eh_frame"); s != nil && s.Type != elf.SHT_NOBITS && s.Addr != 0 {
			m.ehFDEs, _ = parseCFI(s, m.order, s.Addr)
		}
	}
	if fde, err := m.ehFDEs.FDEForPC(pc); err == nil {
		return fde, nil
	}
	if !m.dfTried {
		m.dfTried = true
		if s := m.ef.Section(".debug_frame"); s != nil && s.Type != elf.SHT_NOBITS {
			m.dbgFDEs, _ = parseCFI(s, m.order, 0)
		}
	}
	return m.dbgFDEs.FDEForPC(pc)
}

// parseCFI parses a whole CFI section with delve's parser, under recover:
// the parser trusts its input.
func parseCFI(s *elf.Section, bo binary.ByteOrder, ehFrameAddr uint64) (fdes frame.FrameDescriptionEntries, err error) {
	if s.Size > maxCFISection {
		return nil, fmt.Errorf("%s of %d bytes", s.Name, s.Size)
	}
	d, err := s.Data()
	if err != nil {
		return nil, err
	}
	defer func() {
		if p := recover(); p != nil {
			fdes, err = nil, fmt.Errorf("malformed %s: %v", s.Name, p)
		}
	}()
	fdes, err = frame.Parse(d, bo, 0, 8, ehFrameAddr)
	sort.SliceStable(fdes, func(i, j int) bool { return fdes[i].Begin() < fdes[j].Begin() })
	return fdes, err
}

// fdeFromHdr looks pc up in .eh_frame_hdr's sorted table, reads only the
// FDE it points to and that FDE's CIE, and parses the two alone.
func (m *module) fdeFromHdr(pc uint64) (*frame.FrameDescriptionEntry, error) {
	hdr, eh := m.ef.Section(".eh_frame_hdr"), m.ef.Section(".eh_frame")
	if hdr == nil || eh == nil || hdr.Type == elf.SHT_NOBITS || eh.Type == elf.SHT_NOBITS || hdr.Size < 12 {
		return nil, nil
	}
	fdeAddr, err := m.hdrLookup(hdr, pc)
	if err != nil || fdeAddr == 0 {
		return nil, err
	}
	if fdeAddr < eh.Addr || fdeAddr-eh.Addr >= eh.Size {
		return nil, errors.New(".eh_frame_hdr points outside .eh_frame")
	}
	fdeB, err := m.readCFIEntry(eh, fdeAddr)
	if err != nil {
		return nil, err
	}
	ciePtr := uint64(m.order.Uint32(fdeB[4:]))
	cieAddr := fdeAddr + 4 - ciePtr
	if ciePtr == 0 || cieAddr < eh.Addr || cieAddr >= fdeAddr {
		return nil, errors.New("FDE's CIE pointer is out of .eh_frame")
	}
	cieB, err := m.readCFIEntry(eh, cieAddr)
	if err != nil {
		return nil, err
	}
	return parseCIEAndFDE(cieB, fdeB, fdeAddr, m.order, pc)
}

// hdrLookup binary-searches .eh_frame_hdr for the FDE of pc: the address of
// the last entry whose initial location is <= pc, 0 when there is none.
func (m *module) hdrLookup(hdr *elf.Section, pc uint64) (uint64, error) {
	bo := m.order
	var h [12]byte
	if _, err := hdr.ReadAt(h[:], 0); err != nil {
		return 0, err
	}
	// version 1, eh_frame_ptr pcrel|sdata4, fde_count udata4, table datarel|sdata4:
	// what GNU ld, gold, lld and mold write.
	if h[0] != 1 || h[1] != 0x1b || h[2] != 0x03 || h[3] != 0x3b {
		return 0, nil
	}
	count := uint64(bo.Uint32(h[8:]))
	if count == 0 || 12+count*8 > hdr.Size {
		return 0, errors.New("bad .eh_frame_hdr")
	}
	entry := func(i uint64) (loc, fde uint64, err error) {
		var e [8]byte
		if _, err := hdr.ReadAt(e[:], int64(12+i*8)); err != nil {
			return 0, 0, err
		}
		return hdr.Addr + uint64(int64(int32(bo.Uint32(e[:])))), hdr.Addr + uint64(int64(int32(bo.Uint32(e[4:])))), nil
	}
	lo, hi := uint64(0), count
	for lo < hi {
		mid := lo + (hi-lo)/2
		loc, _, err := entry(mid)
		if err != nil {
			return 0, err
		}
		if loc <= pc {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return 0, nil
	}
	_, fde, err := entry(lo - 1)
	return fde, err
}

// readCFIEntry reads the CIE or FDE at addr in .eh_frame, length included.
func (m *module) readCFIEntry(eh *elf.Section, addr uint64) ([]byte, error) {
	off := addr - eh.Addr
	var l [4]byte
	if _, err := eh.ReadAt(l[:], int64(off)); err != nil {
		return nil, err
	}
	n := uint64(m.order.Uint32(l[:]))
	if n < 8 || n > maxCFIEntry || off+4+n > eh.Size {
		return nil, fmt.Errorf("CFI entry of %d bytes", n)
	}
	b := make([]byte, 4+n)
	if _, err := eh.ReadAt(b, int64(off)); err != nil {
		return nil, err
	}
	return b, nil
}

// parseCIEAndFDE lays a CIE and an FDE side by side, points the FDE at the
// CIE, and tells delve's parser the buffer sits where the FDE's pc-relative
// fields stay right.
func parseCIEAndFDE(cieB, fdeB []byte, fdeAddr uint64, bo binary.ByteOrder, pc uint64) (fde *frame.FrameDescriptionEntry, err error) {
	buf := make([]byte, 0, len(cieB)+len(fdeB)+4)
	buf = append(buf, cieB...)
	fdeAt := len(buf)
	buf = append(buf, fdeB...)
	bo.PutUint32(buf[fdeAt+4:], uint32(fdeAt+4))
	buf = append(buf, 0, 0, 0, 0)
	defer func() {
		if p := recover(); p != nil {
			fde, err = nil, fmt.Errorf("malformed CFI: %v", p)
		}
	}()
	fdes, err := frame.Parse(buf, bo, 0, 8, fdeAddr-uint64(fdeAt))
	if err != nil {
		return nil, err
	}
	return fdes.FDEForPC(pc)
}

// symbolAt is the function symbol covering the link-time address pc.
func (m *module) symbolAt(pc uint64) (symbol, bool) {
	if !m.symsTried {
		m.symsTried = true
		m.syms = m.loadSymbols()
	}
	i := sort.Search(len(m.syms), func(i int) bool { return m.syms[i].addr > pc }) - 1
	if i < 0 {
		return symbol{}, false
	}
	s := m.syms[i]
	if s.size > 0 && pc-s.addr >= s.size {
		return symbol{}, false
	}
	return s, true
}

func (m *module) loadSymbols() []symbol {
	// Like gdb's minimal symbols: .symtab and .dynsym together.
	var out []symbol
	for _, name := range []string{".symtab", ".dynsym"} {
		s := m.ef.Section(name)
		if s == nil || s.Size > maxSymtab || s.Type == elf.SHT_NOBITS {
			continue
		}
		var syms []elf.Symbol
		var err error
		if name == ".symtab" {
			syms, err = m.ef.Symbols()
		} else {
			syms, err = m.ef.DynamicSymbols()
		}
		if err != nil {
			continue
		}
		for _, s := range syms {
			t := elf.ST_TYPE(s.Info)
			if (t != elf.STT_FUNC && t != elf.STT_GNU_IFUNC) || s.Value == 0 || s.Section == elf.SHN_UNDEF {
				continue
			}
			out = append(out, symbol{addr: s.Value, size: s.Size, name: s.Name})
		}
	}
	// Aliases share an address. gdb sorts them by name and takes the last;
	// do the same so that both print one name.
	sort.Slice(out, func(i, j int) bool {
		if out[i].addr != out[j].addr {
			return out[i].addr < out[j].addr
		}
		return out[i].name < out[j].name
	})
	dedup := out[:0]
	for _, s := range out {
		if n := len(dedup); n > 0 && dedup[n-1].addr == s.addr {
			s.size = max(s.size, dedup[n-1].size)
			dedup[n-1] = s
			continue
		}
		dedup = append(dedup, s)
	}
	return dedup
}

// lines loads the module's DWARF once, when it is small enough.
func (m *module) lines() *dwarf.Data {
	if m.dwarfTried {
		return m.dw
	}
	m.dwarfTried = true
	var total uint64
	has := false
	for _, s := range m.ef.Sections {
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			if s.Name == ".debug_info" || s.Name == ".zdebug_info" {
				has = true
			}
			total += s.Size
		}
	}
	if !has || total > maxDWARF {
		return nil
	}
	func() {
		defer func() { _ = recover() }()
		m.dw, _ = m.ef.DWARF()
	}()
	return m.dw
}

// lineAt is the source position of the link-time address pc from DWARF.
func (m *module) lineAt(pc uint64) (file string, line int) {
	d := m.lines()
	if d == nil {
		return "", 0
	}
	defer func() { _ = recover() }()
	cu, err := d.Reader().SeekPC(pc)
	if err != nil || cu == nil {
		return "", 0
	}
	lr, err := d.LineReader(cu)
	if err != nil || lr == nil {
		return "", 0
	}
	// LineReader.SeekPC misses sequences that are not in address order
	// (.text.startup after .text), so walk the CU's rows.
	var le, prev dwarf.LineEntry
	have := false
	for rows := 0; rows < maxLineRows && lr.Next(&le) == nil; rows++ {
		if have && !prev.EndSequence && prev.Address <= pc && pc < le.Address && prev.File != nil {
			return prev.File.Name, prev.Line
		}
		prev, have = le, true
	}
	return "", 0
}

// goTable loads a Go binary's pclntab once.
func (m *module) goTable() *gosym.Table {
	if m.goTried {
		return m.gotab
	}
	m.goTried = true
	s, text := m.ef.Section(".gopclntab"), m.ef.Section(".text")
	if s == nil || text == nil || s.Size > maxPclntab || s.Type == elf.SHT_NOBITS {
		return nil
	}
	d, err := s.Data()
	if err != nil {
		return nil
	}
	func() {
		defer func() { _ = recover() }()
		m.gotab, _ = gosym.NewTable(nil, gosym.NewLineTable(d, text.Addr))
	}()
	return m.gotab
}

// symbolize names the link-time address pc.
func (m *module) symbolize(pc uint64) (fn, file string, line int) {
	if t := m.goTable(); t != nil {
		var f *gosym.Func
		func() {
			defer func() { _ = recover() }()
			file, line, f = t.PCToLine(pc)
		}()
		if f != nil {
			return clipName(f.Name), file, line
		}
	}
	if s, ok := m.symbolAt(pc); ok {
		fn = clipName(Demangle(s.name))
	}
	file, line = m.lineAt(pc)
	return fn, file, line
}

var rustHash = regexp.MustCompile(`::h[0-9a-f]{16}$`)

// Demangle spells a C++ or Rust symbol as people read it, without parameter
// lists; other names are returned as they are.
func Demangle(name string) string {
	if !strings.HasPrefix(name, "_Z") && !strings.HasPrefix(name, "_R") {
		return name
	}
	out, err := demangle.ToString(name, demangle.NoParams, demangle.MaxLength(12))
	if err != nil {
		return name
	}
	return rustHash.ReplaceAllString(out, "")
}

func clipName(s string) string {
	if len(s) > maxName {
		return s[:maxName]
	}
	return s
}
