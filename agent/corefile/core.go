package corefile

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/buildid"
)

// Sentinel errors; ReadCore wraps them with detail.
var (
	// ErrNotELF means the input does not start with the ELF magic. The file is still a
	// crash the name may describe, just not one we can read.
	ErrNotELF = errors.New("not an ELF file")
	// ErrNotCore means the input is ELF but not ET_CORE (an executable, a library).
	ErrNotCore = errors.New("ELF file is not a core dump")
	// ErrCorrupt marks input that contradicts itself; the Core returned alongside holds
	// what was read before (or around) the damage.
	ErrCorrupt = errors.New("corrupt core file")
	// ErrLimit marks input that goes past one of ReadCore's memory or work bounds; the
	// Core returned alongside is partial (for example Threads is a lower bound).
	ErrLimit = errors.New("core file exceeds a parsing limit")
)

// Bounds on what ReadCore reads, so a hostile or huge core costs little memory. A core
// is mostly PT_LOAD data, which ReadCore never reads except for a few small windows.
const (
	// maxPhnum: one program header per mapping; vm.max_map_count is 65530 by default and
	// rarely raised past 262144. 2^20 headers keep loads under 32 MiB.
	maxPhnum = 1 << 20
	// maxNoteSegments: the kernel writes one PT_NOTE.
	maxNoteSegments = 16
	// maxNotes: a thread writes about five notes; this allows ~200k threads.
	maxNotes = 1 << 20
	// maxFileNote is the largest NT_FILE the kernel writes (core_file_note_size_limit max).
	maxFileNote = 16 << 20
	// maxFileEntries bounds the mappings kept from NT_FILE (40 bytes each in memory);
	// vm.max_map_count is rarely raised past 262144.
	maxFileEntries = 1 << 18
	// maxAuxv: the auxiliary vector is a few dozen pairs.
	maxAuxv = 64 << 10
	// maxSmallNote bounds the read of PRSTATUS, PRPSINFO and SIGINFO, which are a few
	// hundred bytes; the parts we need are at the front.
	maxSmallNote = 4096
	// maxNoteName: real owner names are "CORE", "LINUX", "GNU".
	maxNoteName = 64
	// maxCString bounds reading a string (AT_EXECFN) from process memory.
	maxCString = 4096
	// window is the read size for scanning note headers.
	window = 64 << 10
	// maxModulePhnum and maxBuildIDNote bound the build-id lookup in process memory.
	maxModulePhnum = 256
	maxBuildIDNote = 4096
	// maxTrailingNotes is how far past a module's PT_NOTE we look for its build-id.
	maxTrailingNotes = 256
	maxErrors        = 8
)

// Note types (include/uapi/linux/elf.h); debug/elf does not name the newer ones.
const (
	ntPrstatus   = 1
	ntPrpsinfo   = 3
	ntAuxv       = 6
	ntSiginfo    = 0x53494749 // "SIGI"
	ntFile       = 0x46494c45 // "FILE"
	ntGNUBuildID = 3
)

// Auxiliary vector keys (include/uapi/linux/auxvec.h).
const (
	atNull   = 0
	atPhdr   = 3
	atEntry  = 9
	atExecfn = 31
)

const (
	siKernel = 0x80   // si_code of signals the kernel sends without fault detail
	pnXNum   = 0xffff // e_phnum value meaning "see section header 0"
)

// Core is what the ELF core notes say. Everything optional is zero when not known.
type Core struct {
	Machine         string    // "x86_64", "aarch64", otherwise elf.Machine.String()
	Signal          int       // NT_SIGINFO si_signo, else NT_PRSTATUS pr_cursig of the crashing thread
	SignalCode      int       // NT_SIGINFO si_code (SEGV_MAPERR, SI_USER, ...)
	FaultAddress    uint64    // si_addr, when the kernel raised SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGTRAP for a fault
	HasFaultAddress bool      // FaultAddress is meaningful (0 is a valid fault address)
	PID             int64     // NT_PRPSINFO pr_pid (the thread group), else TID; in the process's own PID namespace
	TID             int64     // NT_PRSTATUS pr_pid of the crashing thread, which is its thread ID
	Threads         int       // number of NT_PRSTATUS notes
	Executable      string    // basename: AT_EXECFN if readable, else the main program's NT_FILE mapping, else pr_fname
	ExecutablePath  string    // the main program's NT_FILE path (what to symbolize against), else AT_EXECFN
	CommandLine     string    // NT_PRPSINFO pr_psargs: arguments joined by spaces, at most 80 bytes, not UTF-8 checked
	UID, GID        *int64    // NT_PRPSINFO pr_uid, pr_gid
	PC              uint64    // instruction pointer of the crashing thread
	Mappings        []Mapping // NT_FILE
	Modules         []Module  // the ELF files among the mappings, by address, at most MaxModules
	CrashModule     string    // basename of the NT_FILE mapping containing PC; "" for JIT or anonymous code
	CrashOffset     uint64    // PC as an offset into CrashModule's file
	BuildID         string    // hex GNU build-id of CrashModule, when its ELF header and note are in the core
	Truncated       bool      // the file is shorter than its program headers claim
}

// Mapping is one file-backed mapping from NT_FILE.
type Mapping struct {
	Start, End uint64 // virtual addresses, End exclusive
	FileOffset uint64 // bytes
	Path       string // as the kernel's d_path wrote it, possibly ending in " (deleted)"
}

// Module is one ELF file the process had mapped: its mappings grouped.
type Module struct {
	Path       string // as in NT_FILE
	Start, End uint64 // lowest start and highest end of its mappings
	BuildID    string // hex GNU build-id, when the module's first page is in the core
	// Mapping is the module's mapping at file offset 0 (else its first):
	// what /proc/<pid>/map_files names "<start>-<end>".
	Mapping Mapping
}

// MaxModules bounds Core.Modules: the API's bound of status.analysis.modules.
const MaxModules = coredogv1.MaxAnalysisModules

// maxModuleCandidates bounds how many distinct mapped files are looked at
// for an ELF header; a real process maps a few hundred.
const maxModuleCandidates = 8192

// loadSeg is the part of a PT_LOAD header needed to read process memory.
type loadSeg struct{ vaddr, filesz, off uint64 }

// auxv holds the auxiliary-vector entries ReadCore uses.
type auxv struct{ execfn, phdr, entry uint64 }

// coreReader carries the state of one ReadCore call.
type coreReader struct {
	r     io.ReaderAt
	size  int64
	bo    binary.ByteOrder
	is64  bool
	word  int // 8 or 4
	mach  elf.Machine
	loads []loadSeg
	errs  []error
	ioErr bool
	c     *Core
	notes int
	seen  map[uint32]bool
	fname string
	pspid int64
	aux   auxv
	prSig int
	siSig int
	// Where the program headers are, and where the furthest of them, or of
	// the segments they describe, ends; and where the section headers end
	// (DeclaredSize).
	phoff, hsize uint64
	segEnd       uint64
	shEnd        uint64
	// keepThreads is how many NT_PRSTATUS notes to remember (ReadProcess).
	keepThreads int
	threadNotes []NoteRef
}

func (cr *coreReader) fail(err error) {
	if len(cr.errs) < maxErrors {
		cr.errs = append(cr.errs, err)
	}
}

func (cr *coreReader) corrupt(format string, args ...any) {
	cr.fail(fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...))
}

// readAt reads len(buf) bytes at off, never past size. It returns how many bytes it
// got; a short count without error means the file ended (truncated).
func (cr *coreReader) readAt(buf []byte, off uint64) (int, error) {
	if off >= uint64(cr.size) {
		return 0, nil
	}
	if rem := uint64(cr.size) - off; uint64(len(buf)) > rem {
		buf = buf[:rem]
	}
	n, err := cr.r.ReadAt(buf, int64(off))
	if n == len(buf) || errors.Is(err, io.EOF) {
		return n, nil
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	cr.ioErr = true
	return n, fmt.Errorf("reading core at offset %d: %w", off, err)
}

// ReadCore parses an ELF core file of the given size. It returns ErrNotELF for input
// without the ELF magic and ErrNotCore for an ELF file that is not ET_CORE, both with a
// nil Core. For damaged input it returns the Core it could read together with an error
// wrapping ErrCorrupt (or ErrLimit when a bound was hit, or the reader's error). It reads
// only the ELF header, the program headers, the PT_NOTE segments and a few small windows
// of process memory, so memory use stays bounded however large or hostile the file.
func ReadCore(r io.ReaderAt, size int64) (*Core, error) {
	cr, err := readCore(r, size, 0)
	if cr == nil {
		return nil, err
	}
	return cr.c, err
}

// readCore is ReadCore keeping the intermediate state (which tests and
// ReadProcess use), and the places of the first keepThreads NT_PRSTATUS notes.
func readCore(r io.ReaderAt, size int64, keepThreads int) (*coreReader, error) {
	if size < 0 {
		size = 0
	}
	cr := &coreReader{r: r, size: size, seen: map[uint32]bool{}, keepThreads: max(keepThreads, 0)}
	notes, err := cr.readHeaders()
	if err != nil {
		return nil, err
	}
	for _, ns := range notes {
		if cr.ioErr {
			break
		}
		cr.readNotes(ns)
	}
	cr.derive()
	return cr, errors.Join(cr.errs...)
}

// noteSeg is a PT_NOTE segment's file extent and alignment.
type noteSeg struct{ off, filesz, align uint64 }

// readHeaders validates the ELF header and loads the program headers.
func (cr *coreReader) readHeaders() ([]noteSeg, error) {
	var hdr [64]byte
	n, err := cr.readAt(hdr[:], 0)
	if err != nil {
		return nil, err
	}
	if n < 4 || !bytes.Equal(hdr[:4], []byte(elf.ELFMAG)) {
		return nil, ErrNotELF
	}
	if n < elf.EI_NIDENT {
		return nil, fmt.Errorf("%w: ELF identification cut off after %d bytes", ErrCorrupt, n)
	}
	switch elf.Class(hdr[elf.EI_CLASS]) {
	case elf.ELFCLASS64:
		cr.is64, cr.word = true, 8
	case elf.ELFCLASS32:
		cr.word = 4
	default:
		return nil, fmt.Errorf("%w: unknown ELF class %d", ErrCorrupt, hdr[elf.EI_CLASS])
	}
	switch elf.Data(hdr[elf.EI_DATA]) {
	case elf.ELFDATA2LSB:
		cr.bo = binary.LittleEndian
	case elf.ELFDATA2MSB:
		cr.bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("%w: unknown ELF data encoding %d", ErrCorrupt, hdr[elf.EI_DATA])
	}
	// Offsets follow elf.Header64 and elf.Header32. We decode by hand rather than with
	// elf.NewFile because NewFile also loads the section-name table, which a hostile
	// core can declare as large as the file.
	hsize := 52
	if cr.is64 {
		hsize = 64
	}
	if n < hsize {
		return nil, fmt.Errorf("%w: ELF header cut off after %d bytes", ErrCorrupt, n)
	}
	bo := cr.bo
	if elf.Type(bo.Uint16(hdr[16:])) != elf.ET_CORE {
		return nil, fmt.Errorf("%w: type %v", ErrNotCore, elf.Type(bo.Uint16(hdr[16:])))
	}
	cr.mach = elf.Machine(bo.Uint16(hdr[18:]))
	cr.c = &Core{Machine: machineName(cr.mach)}
	var phoff, shoff uint64
	var phentsize, phnum, shentsize uint64
	if cr.is64 {
		phoff, shoff = bo.Uint64(hdr[32:]), bo.Uint64(hdr[40:])
		phentsize, phnum, shentsize = uint64(bo.Uint16(hdr[54:])), uint64(bo.Uint16(hdr[56:])), uint64(bo.Uint16(hdr[58:]))
	} else {
		phoff, shoff = uint64(bo.Uint32(hdr[28:])), uint64(bo.Uint32(hdr[32:]))
		phentsize, phnum, shentsize = uint64(bo.Uint16(hdr[42:])), uint64(bo.Uint16(hdr[44:])), uint64(bo.Uint16(hdr[46:]))
	}
	cr.phoff, cr.hsize = phoff, uint64(hsize)
	if shoff != 0 && shentsize != 0 {
		// A core has section headers only when e_phnum overflows: then
		// section header 0, written last, holds the count (PN_XNUM).
		shnum := uint64(bo.Uint16(hdr[60:]))
		if !cr.is64 {
			shnum = uint64(bo.Uint16(hdr[48:]))
		}
		if end := shoff + max(shnum, 1)*shentsize; end > shoff {
			cr.shEnd = end
		}
	}
	if phnum == pnXNum {
		// More than 65534 mappings: the real count is in section header 0's sh_info.
		phnum = cr.extendedPhnum(shoff, shentsize)
	}
	if phnum == 0 {
		cr.corrupt("no program headers")
		return nil, nil
	}
	minEnt := uint64(32)
	if cr.is64 {
		minEnt = 56
	}
	if phentsize < minEnt {
		cr.corrupt("program header size %d, want at least %d", phentsize, minEnt)
		return nil, nil
	}
	if phnum > maxPhnum {
		cr.fail(fmt.Errorf("%w: %d program headers, reading the first %d", ErrLimit, phnum, maxPhnum))
		phnum = maxPhnum
	}
	if end := phoff + phnum*phentsize; end >= phoff {
		cr.segEnd = end
	}
	if phoff > uint64(cr.size) || phnum*phentsize > uint64(cr.size)-phoff {
		cr.c.Truncated = true
	}
	return cr.readProgs(phoff, phentsize, phnum), nil
}

// extendedPhnum reads e_phnum's PN_XNUM extension; 0 when it cannot.
func (cr *coreReader) extendedPhnum(shoff, shentsize uint64) uint64 {
	infoOff, minEnt := uint64(28), uint64(40)
	if cr.is64 {
		infoOff, minEnt = 44, 64
	}
	if shoff == 0 || shentsize < minEnt {
		cr.corrupt("e_phnum is PN_XNUM but there is no section header 0")
		return 0
	}
	var b [4]byte
	if n, err := cr.readAt(b[:], shoff+infoOff); err != nil || n < 4 {
		if err != nil {
			cr.fail(err)
		}
		cr.c.Truncated = true
		cr.corrupt("e_phnum is PN_XNUM but section header 0 is past the end of the file")
		return 0
	}
	return uint64(cr.bo.Uint32(b[:]))
}

// readProgs reads program headers in chunks, keeping PT_LOAD extents for memory reads
// and returning the PT_NOTE segments.
func (cr *coreReader) readProgs(phoff, phentsize, phnum uint64) []noteSeg {
	var notes []noteSeg
	perChunk := max(1, window/phentsize)
	buf := make([]byte, min(phnum, perChunk)*phentsize)
	bo := cr.bo
	for i := uint64(0); i < phnum; {
		cnt := min(phnum-i, perChunk)
		off := phoff + i*phentsize
		if off < phoff { // overflow: the table runs off the address space
			cr.corrupt("program header table offset overflows")
			break
		}
		n, err := cr.readAt(buf[:cnt*phentsize], off)
		if err != nil {
			cr.fail(err)
			break
		}
		got := uint64(n) / phentsize
		for j := range got {
			p := buf[j*phentsize : (j+1)*phentsize]
			var typ, offset, vaddr, filesz, align uint64
			typ = uint64(bo.Uint32(p[0:]))
			if cr.is64 {
				offset, vaddr, filesz, align = bo.Uint64(p[8:]), bo.Uint64(p[16:]), bo.Uint64(p[32:]), bo.Uint64(p[48:])
			} else {
				offset, vaddr, filesz, align = uint64(bo.Uint32(p[4:])), uint64(bo.Uint32(p[8:])), uint64(bo.Uint32(p[16:])), uint64(bo.Uint32(p[28:]))
			}
			if end := offset + filesz; end >= offset && filesz > 0 {
				cr.segEnd = max(cr.segEnd, end)
			}
			if elf.ProgType(typ) != elf.PT_LOAD && elf.ProgType(typ) != elf.PT_NOTE {
				continue
			}
			if offset+filesz < offset {
				cr.corrupt("program header %d: offset %#x + size %#x overflows", i+j, offset, filesz)
				continue
			}
			if offset+filesz > uint64(cr.size) {
				cr.c.Truncated = true
			}
			if elf.ProgType(typ) == elf.PT_LOAD {
				if filesz > 0 {
					cr.loads = append(cr.loads, loadSeg{vaddr: vaddr, filesz: filesz, off: offset})
				}
			} else if len(notes) < maxNoteSegments {
				notes = append(notes, noteSeg{off: offset, filesz: filesz, align: align})
			} else {
				cr.fail(fmt.Errorf("%w: more than %d PT_NOTE segments", ErrLimit, maxNoteSegments))
			}
		}
		if got < cnt {
			cr.corrupt("program headers cut off by the end of the file after %d of %d", i+got, phnum)
			break
		}
		i += cnt
	}
	slices.SortFunc(cr.loads, func(a, b loadSeg) int {
		switch {
		case a.vaddr < b.vaddr:
			return -1
		case a.vaddr > b.vaddr:
			return 1
		}
		return 0
	})
	return notes
}

// machineName spells the two architectures CoreDog targets the way uname -m does.
func machineName(m elf.Machine) string {
	switch m {
	case elf.EM_X86_64:
		return "x86_64"
	case elf.EM_AARCH64:
		return "aarch64"
	}
	return m.String()
}

// noteScanner reads a PT_NOTE segment's headers through a window so that scanning
// thousands of per-thread notes costs a few reads, while descriptors we do not need
// (registers of other threads, XSAVE state) are skipped without being read.
type noteScanner struct {
	cr   *coreReader
	base uint64 // file offset of buf[0]
	buf  []byte
}

// bytes returns n bytes at file offset off, or nil if they are not in the file.
func (s *noteScanner) bytes(off uint64, n int) ([]byte, error) {
	if off >= s.base && off+uint64(n) <= s.base+uint64(len(s.buf)) {
		return s.buf[off-s.base : off-s.base+uint64(n)], nil
	}
	if s.buf == nil {
		s.buf = make([]byte, window)
	}
	s.buf = s.buf[:cap(s.buf)]
	got, err := s.cr.readAt(s.buf, off)
	s.base, s.buf = off, s.buf[:got]
	if err != nil {
		return nil, err
	}
	if got < n {
		return nil, nil
	}
	return s.buf[:n], nil
}

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }

// readNotes walks one PT_NOTE segment. Note layout: namesz, descsz, type (4 bytes each),
// then name and desc, each padded to the segment's alignment (4 for Linux cores).
func (cr *coreReader) readNotes(ns noteSeg) {
	align := uint64(4)
	if ns.align == 8 {
		align = 8
	}
	end := ns.off + ns.filesz // overflow was rejected in readProgs
	sc := &noteScanner{cr: cr}
	for pos := ns.off; pos < end; {
		if end-pos < 12 {
			cr.corrupt("%d stray bytes at the end of the notes", end-pos)
			return
		}
		hdr, err := sc.bytes(pos, 12)
		if err != nil {
			cr.fail(err)
			return
		}
		if hdr == nil {
			cr.corrupt("notes cut off by the end of the file at offset %d", pos)
			return
		}
		namesz, descsz, typ := uint64(cr.bo.Uint32(hdr)), uint64(cr.bo.Uint32(hdr[4:])), cr.bo.Uint32(hdr[8:])
		nameOff := pos + 12
		descOff := nameOff + alignUp(namesz, align)
		next := descOff + alignUp(descsz, align)
		if next > end || descOff > end {
			// From here on every "header" would be read from the wrong place.
			cr.corrupt("note at offset %d (namesz %d, descsz %d) overruns its segment", pos, namesz, descsz)
			return
		}
		if next > uint64(cr.size) {
			cr.corrupt("note at offset %d cut off by the end of the file", pos)
			return
		}
		cr.notes++
		if cr.notes > maxNotes {
			cr.fail(fmt.Errorf("%w: more than %d notes", ErrLimit, maxNotes))
			return
		}
		if namesz <= maxNoteName {
			name, err := sc.bytes(nameOff, int(namesz))
			if err != nil {
				cr.fail(err)
				return
			}
			if name == nil {
				cr.corrupt("note name cut off by the end of the file at offset %d", nameOff)
				return
			}
			if string(bytes.TrimRight(name, "\x00")) == "CORE" {
				if !cr.coreNote(typ, descOff, descsz) {
					return
				}
			}
		}
		pos = next
	}
}

// coreNote handles one note owned by "CORE". It returns false when reading must stop.
func (cr *coreReader) coreNote(typ uint32, off, size uint64) bool {
	if typ == ntPrstatus {
		cr.c.Threads++
		if len(cr.threadNotes) < cr.keepThreads {
			cr.threadNotes = append(cr.threadNotes, NoteRef{Offset: off, Size: size})
		}
	}
	if cr.seen[typ] {
		return true // the process-wide notes and the crashing thread come first
	}
	limit := uint64(0)
	switch typ {
	case ntPrstatus, ntPrpsinfo, ntSiginfo:
		limit = maxSmallNote
	case ntAuxv:
		limit = maxAuxv
	case ntFile:
		if size > maxFileNote {
			cr.fail(fmt.Errorf("%w: NT_FILE note of %d bytes, the kernel writes at most %d", ErrLimit, size, maxFileNote))
			cr.seen[typ] = true
			return true
		}
		limit = maxFileNote
	default:
		return true
	}
	cr.seen[typ] = true
	desc := make([]byte, min(size, limit))
	n, err := cr.readAt(desc, off)
	if err != nil {
		cr.fail(err)
		return false
	}
	if n < len(desc) {
		cr.corrupt("note type %#x cut off by the end of the file", typ)
		return false
	}
	switch typ {
	case ntPrstatus:
		cr.prstatus(desc)
	case ntPrpsinfo:
		cr.prpsinfo(desc)
	case ntSiginfo:
		cr.siginfo(desc)
	case ntAuxv:
		cr.auxv(desc)
	case ntFile:
		cr.fileNote(desc)
	}
	return true
}

// word reads a native-size unsigned word at off; ok is false past the end of b.
func (cr *coreReader) wordAt(b []byte, off int) (uint64, bool) {
	if off < 0 || off+cr.word > len(b) {
		return 0, false
	}
	if cr.is64 {
		return cr.bo.Uint64(b[off:]), true
	}
	return uint64(cr.bo.Uint32(b[off:])), true
}

func (cr *coreReader) u32At(b []byte, off int) (uint32, bool) {
	if off < 0 || off+4 > len(b) {
		return 0, false
	}
	return cr.bo.Uint32(b[off:]), true
}

// pcIndex is the index of the instruction pointer in the prstatus register set
// (elf_gregset_t), from each architecture's struct user_regs_struct / user_pt_regs.
func (cr *coreReader) pcIndex() (int, bool) {
	switch {
	case cr.is64 && cr.mach == elf.EM_X86_64:
		return 16, true // r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax rcx rdx rsi rdi orig_rax rip
	case cr.is64 && cr.mach == elf.EM_AARCH64:
		return 32, true // regs[31] sp pc pstate
	case cr.is64 && cr.mach == elf.EM_RISCV:
		return 0, true // pc ra sp ...
	case !cr.is64 && cr.mach == elf.EM_386:
		return 12, true // ebx ecx edx esi edi ebp eax ds es fs gs orig_eax eip
	case !cr.is64 && cr.mach == elf.EM_ARM:
		return 15, true // r0..r15 (pc) cpsr orig_r0
	}
	return 0, false
}

// prstatus reads struct elf_prstatus: elf_siginfo (12 bytes), short pr_cursig at 12,
// then pr_sigpend, pr_sighold (words), pr_pid; four timevals; then pr_reg.
func (cr *coreReader) prstatus(d []byte) {
	if len(d) < 36 {
		cr.corrupt("NT_PRSTATUS of %d bytes", len(d))
	}
	if len(d) >= 14 {
		cr.prSig = int(int16(cr.bo.Uint16(d[12:])))
	}
	pidOff, regOff := 24, 72
	if cr.is64 {
		pidOff, regOff = 32, 112
	}
	if pid, ok := cr.u32At(d, pidOff); ok {
		cr.c.TID = int64(int32(pid))
	}
	if idx, ok := cr.pcIndex(); ok {
		if pc, ok := cr.wordAt(d, regOff+idx*cr.word); ok {
			cr.c.PC = pc
		}
	}
}

// prpsinfo reads struct elf_prpsinfo. On 64-bit: four chars, pr_flag at 8, pr_uid and
// pr_gid (u32) at 16 and 20, pr_pid at 24, pr_fname[16] at 40, pr_psargs[80] at 56 (136
// bytes). 32-bit kernels differ in the width of uid/gid (16 bits on i386 and arm), so
// there everything is located from the end of the fixed-size tail.
func (cr *coreReader) prpsinfo(d []byte) {
	var uidOff, gidOff, idSize, pidOff, fnameOff, argsOff int
	if cr.is64 {
		uidOff, gidOff, idSize, pidOff, fnameOff, argsOff = 16, 20, 4, 24, 40, 56
	} else {
		fnameOff, argsOff, pidOff = len(d)-96, len(d)-80, len(d)-112
		idSize = (pidOff - 8) / 2 // the ids sit between pr_flag and pr_pid
		uidOff, gidOff = 8, 8+idSize
		if idSize != 2 && idSize != 4 || pidOff < 0 {
			idSize = 0
		}
	}
	if len(d) < 124 {
		cr.corrupt("NT_PRPSINFO of %d bytes", len(d))
	}
	if pid, ok := cr.u32At(d, pidOff); ok {
		cr.pspid = int64(int32(pid))
	}
	if idSize > 0 && gidOff+idSize <= len(d) {
		var uid, gid int64
		if idSize == 4 {
			uid, gid = int64(cr.bo.Uint32(d[uidOff:])), int64(cr.bo.Uint32(d[gidOff:]))
		} else {
			uid, gid = int64(cr.bo.Uint16(d[uidOff:])), int64(cr.bo.Uint16(d[gidOff:]))
		}
		cr.c.UID, cr.c.GID = &uid, &gid
	}
	if fnameOff >= 0 && fnameOff+16 <= len(d) {
		cr.fname = cString(d[fnameOff : fnameOff+16])
	}
	if argsOff >= 0 && argsOff+80 <= len(d) {
		// The kernel joins argv with spaces and NUL-terminates within 80 bytes.
		cr.c.CommandLine = strings.TrimRight(cString(d[argsOff:argsOff+80]), " ")
	}
}

// siginfo reads siginfo_t: si_signo, si_errno, si_code (int32 each), then the union,
// which starts at 16 on 64-bit (after padding) and at 12 on 32-bit.
func (cr *coreReader) siginfo(d []byte) {
	signo, ok1 := cr.u32At(d, 0)
	code, ok2 := cr.u32At(d, 8)
	if !ok1 || !ok2 {
		cr.corrupt("NT_SIGINFO of %d bytes", len(d))
		return
	}
	cr.siSig = int(int32(signo))
	cr.c.SignalCode = int(int32(code))
	addrOff := 12
	if cr.is64 {
		addrOff = 16
	}
	switch cr.siSig {
	case 4, 5, 7, 8, 11: // SIGILL SIGTRAP SIGBUS SIGFPE SIGSEGV
		// si_addr is only filled for faults the kernel detected (si_code > 0); for
		// kill(2), tgkill(2) and SI_KERNEL the union holds other data or nothing.
		if c := int32(code); c > 0 && c < siKernel {
			if addr, ok := cr.wordAt(d, addrOff); ok {
				cr.c.FaultAddress, cr.c.HasFaultAddress = addr, true
			}
		}
	}
}

// auxv reads (key, value) word pairs up to AT_NULL.
func (cr *coreReader) auxv(d []byte) {
	for off := 0; off+2*cr.word <= len(d); off += 2 * cr.word {
		k, _ := cr.wordAt(d, off)
		v, _ := cr.wordAt(d, off+cr.word)
		switch k {
		case atNull:
			return
		case atExecfn:
			cr.aux.execfn = v
		case atPhdr:
			cr.aux.phdr = v
		case atEntry:
			cr.aux.entry = v
		}
	}
}

// fileNote reads NT_FILE: count, page_size, count × (start, end, file_ofs in pages),
// then count NUL-terminated paths.
func (cr *coreReader) fileNote(d []byte) {
	w := uint64(cr.word)
	count, ok1 := cr.wordAt(d, 0)
	pageSize, ok2 := cr.wordAt(d, cr.word)
	if !ok1 || !ok2 {
		cr.corrupt("NT_FILE of %d bytes", len(d))
		return
	}
	if count > uint64(len(d)) || (2+3*count)*w > uint64(len(d)) {
		cr.corrupt("NT_FILE claims %d mappings in %d bytes", count, len(d))
		return
	}
	names := string(d[(2+3*count)*w:]) // one allocation; paths are substrings of it
	keep := count
	if keep > maxFileEntries {
		cr.fail(fmt.Errorf("%w: NT_FILE lists %d mappings, keeping the first %d", ErrLimit, count, maxFileEntries))
		keep = maxFileEntries
	}
	maps := make([]Mapping, 0, keep)
	for i := range keep {
		base := int((2 + 3*i) * w)
		start, _ := cr.wordAt(d, base)
		end, _ := cr.wordAt(d, base+cr.word)
		pgoff, _ := cr.wordAt(d, base+2*cr.word)
		path, rest, found := strings.Cut(names, "\x00")
		if !found && rest == "" && path == "" {
			cr.corrupt("NT_FILE has %d paths for %d mappings", i, count)
			break
		}
		names = rest
		fileOff := pgoff * pageSize
		if pageSize != 0 && fileOff/pageSize != pgoff {
			cr.corrupt("NT_FILE mapping %d: file offset overflows", i)
			continue
		}
		maps = append(maps, Mapping{Start: start, End: end, FileOffset: fileOff, Path: path})
	}
	cr.c.Mappings = maps
}

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// readMem reads up to n bytes of process memory at addr from the PT_LOAD data that
// covers it. It returns fewer bytes (or none) where the core did not dump memory.
func (cr *coreReader) readMem(addr uint64, n int) []byte {
	if cr.ioErr {
		return nil // the reader already failed; one error is enough
	}
	i, _ := slices.BinarySearchFunc(cr.loads, addr, func(l loadSeg, a uint64) int {
		switch {
		case l.vaddr < a:
			return -1
		case l.vaddr > a:
			return 1
		}
		return 0
	})
	if i == len(cr.loads) || cr.loads[i].vaddr != addr {
		i--
	}
	if i < 0 {
		return nil
	}
	l := cr.loads[i]
	if addr-l.vaddr >= l.filesz {
		return nil
	}
	buf := make([]byte, min(uint64(n), l.filesz-(addr-l.vaddr)))
	got, err := cr.readAt(buf, l.off+(addr-l.vaddr))
	if err != nil {
		cr.fail(err)
	}
	return buf[:got]
}

// mappingAt returns the NT_FILE mapping containing addr.
func (cr *coreReader) mappingAt(addr uint64) (Mapping, bool) {
	for _, m := range cr.c.Mappings {
		if addr >= m.Start && addr < m.End {
			return m, true
		}
	}
	return Mapping{}, false
}

// moduleName is a mapping's basename without the " (deleted)" the kernel appends when
// the file was replaced after being mapped, which a rolling update routinely does; the
// crash is still in the same module.
func moduleName(path string) string {
	path = strings.TrimSuffix(path, " (deleted)")
	return path[strings.LastIndexByte(path, '/')+1:]
}

// derive fills the fields that combine several notes.
func (cr *coreReader) derive() {
	c := cr.c
	c.Signal = cr.prSig
	if cr.siSig != 0 {
		c.Signal = cr.siSig
	}
	// pr_pid in NT_PRSTATUS is the thread's ID; only NT_PRPSINFO, filled from the
	// group leader, has the process's. They differ whenever a thread other than the
	// main one crashes, as Go's runtime threads routinely do.
	c.PID = cr.pspid
	if c.PID == 0 {
		c.PID = c.TID
	}
	execfn := ""
	if cr.aux.execfn != 0 {
		// A string not terminated inside what was dumped is not trustworthy, and a
		// program started with fexecve(3) has a descriptor path whose basename is a
		// number; NT_FILE names the real file then.
		if b := cr.readMem(cr.aux.execfn, maxCString); bytes.IndexByte(b, 0) >= 0 {
			execfn = cString(b)
		}
		if strings.HasPrefix(execfn, "/proc/self/fd/") || strings.HasPrefix(execfn, "/dev/fd/") {
			execfn = ""
		}
	}
	main, hasMain := cr.mainMapping()
	switch {
	case execfn != "":
		c.Executable = moduleName(execfn)
	case hasMain:
		c.Executable = moduleName(main.Path)
	default:
		c.Executable = cr.fname
	}
	if hasMain {
		c.ExecutablePath = main.Path
	} else {
		c.ExecutablePath = execfn
	}
	if m, ok := cr.mappingAt(c.PC); ok && moduleName(m.Path) != "" {
		c.CrashModule = moduleName(m.Path)
		c.CrashOffset = c.PC - m.Start + m.FileOffset
		c.BuildID = cr.buildID(c.Mappings, m)
	}
	c.Modules = cr.modules(main, hasMain)
}

// modules groups the mappings by file and keeps the ELF files among them
// (a file whose first page in the core starts with the ELF magic, and the
// main program), lowest address first, at most MaxModules. It sorts indexes
// rather than building a map of paths, so that memory stays a few bytes per
// mapping, and looks at no more than maxModuleCandidates files.
func (cr *coreReader) modules(main Mapping, hasMain bool) []Module {
	maps := cr.c.Mappings
	order := make([]int32, 0, len(maps))
	for i, m := range maps {
		if m.Path != "" && m.End > m.Start {
			order = append(order, int32(i))
		}
	}
	slices.SortFunc(order, func(a, b int32) int {
		return cmp.Or(strings.Compare(maps[a].Path, maps[b].Path), cmp.Compare(maps[a].Start, maps[b].Start))
	})
	// groups: each file's mappings, as a run of order; sorted by address.
	type group struct{ from, to int }
	var groups []group
	for i := 0; i < len(order); {
		j := i + 1
		for j < len(order) && maps[order[j]].Path == maps[order[i]].Path {
			j++
		}
		groups = append(groups, group{i, j})
		i = j
	}
	slices.SortFunc(groups, func(a, b group) int { return cmp.Compare(maps[order[a.from]].Start, maps[order[b.from]].Start) })
	if len(groups) > maxModuleCandidates {
		cr.fail(fmt.Errorf("%w: %d mapped files, looking at the first %d for modules", ErrLimit, len(groups), maxModuleCandidates))
		groups = groups[:maxModuleCandidates]
	}
	var out []Module
	for _, g := range groups {
		own := make([]Mapping, 0, g.to-g.from)
		for _, i := range order[g.from:g.to] {
			own = append(own, maps[i])
		}
		first := own[0]
		for _, m := range own {
			if m.FileOffset == 0 {
				first = m
				break
			}
		}
		hdr := cr.readFileAtLeast(own, first, 0, 4, 4)
		isMain := hasMain && main.Path == first.Path
		if !isMain && (hdr == nil || !bytes.Equal(hdr, []byte(elf.ELFMAG))) {
			continue
		}
		if len(out) == MaxModules {
			cr.fail(fmt.Errorf("%w: more than %d modules, keeping the first %d", ErrLimit, MaxModules, MaxModules))
			break
		}
		mod := Module{Path: first.Path, Start: first.Start, End: first.End, Mapping: first, BuildID: cr.buildID(own, first)}
		for _, m := range own {
			mod.Start, mod.End = min(mod.Start, m.Start), max(mod.End, m.End)
		}
		out = append(out, mod)
	}
	return out
}

// mainMapping finds the main program's mapping: the one holding its program headers
// (AT_PHDR) or entry point, else one whose name starts with the comm.
func (cr *coreReader) mainMapping() (Mapping, bool) {
	for _, a := range []uint64{cr.aux.phdr, cr.aux.entry} {
		if a != 0 {
			if m, ok := cr.mappingAt(a); ok {
				return m, true
			}
		}
	}
	if cr.fname != "" {
		for _, m := range cr.c.Mappings {
			if m.FileOffset == 0 && strings.HasPrefix(moduleName(m.Path), cr.fname) {
				return m, true
			}
		}
	}
	return Mapping{}, false
}

// readFile reads n bytes at offset off of the file behind mapping m, through any
// mapping of the same path that covers that offset and whose memory was dumped.
func (cr *coreReader) readFile(maps []Mapping, m Mapping, off uint64, n int) []byte {
	return cr.readFileAtLeast(maps, m, off, n, n)
}

// readFileAtLeast is readFile that settles for a prefix of at least need bytes.
func (cr *coreReader) readFileAtLeast(maps []Mapping, m Mapping, off uint64, need, n int) []byte {
	for _, o := range maps {
		if o.Path != m.Path || o.End < o.Start || off < o.FileOffset || off-o.FileOffset >= o.End-o.Start {
			continue
		}
		avail := o.End - o.Start - (off - o.FileOffset)
		if uint64(need) > avail {
			continue
		}
		if b := cr.readMem(o.Start+(off-o.FileOffset), int(min(uint64(n), avail))); len(b) >= need {
			return b
		}
	}
	return nil
}

// buildID reads the GNU build-id of the module behind mapping m from the module's ELF
// header, program headers and PT_NOTE as they sit in dumped process memory; the kernel
// dumps the first page of every ELF mapping for exactly this purpose.
func (cr *coreReader) buildID(maps []Mapping, m Mapping) string {
	hdr := cr.readFile(maps, m, 0, 64)
	if hdr == nil || !bytes.Equal(hdr[:4], []byte(elf.ELFMAG)) {
		hdr = cr.readFile(maps, m, 0, 52) // a 32-bit module near the end of a mapping
		if hdr == nil || !bytes.Equal(hdr[:4], []byte(elf.ELFMAG)) {
			return ""
		}
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if elf.Data(hdr[elf.EI_DATA]) == elf.ELFDATA2MSB {
		bo = binary.BigEndian
	}
	is64 := elf.Class(hdr[elf.EI_CLASS]) == elf.ELFCLASS64
	var phoff, phentsize, phnum uint64
	switch {
	case is64 && len(hdr) >= 64:
		phoff, phentsize, phnum = bo.Uint64(hdr[32:]), uint64(bo.Uint16(hdr[54:])), uint64(bo.Uint16(hdr[56:]))
	case !is64:
		phoff, phentsize, phnum = uint64(bo.Uint32(hdr[28:])), uint64(bo.Uint16(hdr[42:])), uint64(bo.Uint16(hdr[44:]))
	default:
		return ""
	}
	minEnt := uint64(32)
	if is64 {
		minEnt = 56
	}
	if phentsize < minEnt || phnum == 0 || phnum > maxModulePhnum || phoff > 1<<32 {
		return ""
	}
	phdrs := cr.readFile(maps, m, phoff, int(phnum*phentsize))
	if phdrs == nil {
		return ""
	}
	for i := range phnum {
		p := phdrs[i*phentsize:]
		if elf.ProgType(bo.Uint32(p)) != elf.PT_NOTE {
			continue
		}
		var off, size, align uint64
		if is64 {
			off, size, align = bo.Uint64(p[8:]), bo.Uint64(p[32:]), bo.Uint64(p[48:])
		} else {
			off, size, align = uint64(bo.Uint32(p[4:])), uint64(bo.Uint32(p[16:])), uint64(bo.Uint32(p[28:]))
		}
		if size == 0 || size > maxBuildIDNote {
			continue
		}
		// Go's linker (which writes a GNU build-id by default since Go 1.24) leaves
		// .note.gnu.build-id right after the PT_NOTE segment instead of inside it, so
		// keep parsing well-formed notes a little past the segment's end.
		if id := buildid.FindNote(cr.readFileAtLeast(maps, m, off, int(size), int(size)+maxTrailingNotes), bo, align); id != "" {
			return id
		}
	}
	return ""
}
