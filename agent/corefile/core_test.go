package corefile

import (
	"bytes"
	"debug/elf"
	"errors"
	"math/rand"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
)

func readBytes(b []byte) (*Core, error) { return ReadCore(bytes.NewReader(b), int64(len(b))) }

const synthBuildIDHex = "deadbeef000102030405060708090a0b0c0d0e0f"

// coreWant lists the Core fields a test checks; nil pointers in UID/GID mean "absent".
type coreWant struct {
	machine, exe, exePath, cmdline, module, buildID string
	signal, code, threads                           int
	fault                                           uint64
	hasFault, truncated                             bool
	pid, tid                                        int64
	pc, offset                                      uint64
	uid, gid                                        *int64
	mappings                                        int
}

func checkCore(t *testing.T, c *Core, w coreWant) {
	t.Helper()
	ptr := func(p *int64) any {
		if p == nil {
			return nil
		}
		return *p
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"Machine", c.Machine, w.machine},
		{"Signal", c.Signal, w.signal},
		{"SignalCode", c.SignalCode, w.code},
		{"FaultAddress", c.FaultAddress, w.fault},
		{"HasFaultAddress", c.HasFaultAddress, w.hasFault},
		{"PID", c.PID, w.pid},
		{"TID", c.TID, w.tid},
		{"Threads", c.Threads, w.threads},
		{"Executable", c.Executable, w.exe},
		{"ExecutablePath", c.ExecutablePath, w.exePath},
		{"CommandLine", c.CommandLine, w.cmdline},
		{"UID", ptr(c.UID), ptr(w.uid)},
		{"GID", ptr(c.GID), ptr(w.gid)},
		{"PC", c.PC, w.pc},
		{"CrashModule", c.CrashModule, w.module},
		{"CrashOffset", c.CrashOffset, w.offset},
		{"BuildID", c.BuildID, w.buildID},
		{"Truncated", c.Truncated, w.truncated},
		{"len(Mappings)", len(c.Mappings), w.mappings},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
}

func x86Want() coreWant {
	return coreWant{
		machine: "x86_64", signal: 11, code: 1, fault: 0x10, hasFault: true, pid: 4242, tid: 4250, threads: 2,
		exe: "app-link", exePath: "/usr/bin/app", cmdline: "/usr/bin/app-link --serve",
		uid: ptr.To[int64](1000), gid: ptr.To[int64](2000), pc: 0x401234, module: "app", offset: 0x1234,
		buildID: synthBuildIDHex, mappings: 3,
	}
}

// TestReadCoreSynthetic covers the layouts and fallbacks a crash on this machine cannot
// produce: arm64 and i386 register sets, and each source of the executable's name.
func TestReadCoreSynthetic(t *testing.T) {
	tests := []struct {
		name   string
		core   func() synthCore
		change func(*coreWant)
	}{
		{"x86-64", synthX86, func(*coreWant) {}},
		{"arm64: pc is register 32", synthARM64, func(w *coreWant) { w.machine = "aarch64" }},
		{"i386", synth386, func(w *coreWant) {
			*w = coreWant{
				machine: "EM_386", signal: 7, code: 2, fault: 0xdeadbee0, hasFault: true, pid: 77, tid: 77, threads: 1,
				exe: "old", exePath: "/bin/old", cmdline: "old -x", uid: ptr.To[int64](5), gid: ptr.To[int64](6),
				pc: 0x8048123, module: "old", offset: 0x123, mappings: 1,
			}
		}},
		{"no auxv: executable from the comm", func() synthCore {
			s := synthX86()
			s.notes = append(s.notes[:3], s.notes[4:]...)
			return s
		}, func(w *coreWant) { w.exePath = "" }},
		{"AT_EXECFN not terminated in the dump: executable from NT_FILE", func() synthCore {
			s := synthX86()
			s.loads[2].data = []byte("/usr/bin/app-link")
			return s
		}, func(w *coreWant) { w.exe = "app" }},
		{"fexecve: descriptor path ignored", func() synthCore {
			s := synthX86()
			s.loads[2].data = append([]byte("/dev/fd/3"), 0)
			return s
		}, func(w *coreWant) { w.exe = "app" }},
		{"AT_EXECFN outside dumped memory", func() synthCore {
			s := synthX86()
			s.notes[3].desc = words(false, atPhdr, 0x400040, atExecfn, 0x1234, atNull, 0)
			return s
		}, func(w *coreWant) { w.exe = "app" }},
		{"kill(2): no fault address", func() synthCore {
			s := synthX86()
			s.notes[2].desc = siginfo64(11, 0, 0x1234) // SI_USER: the union holds pid/uid
			return s
		}, func(w *coreWant) { w.code, w.fault, w.hasFault = 0, 0, false }},
		{"SI_KERNEL: no fault address", func() synthCore {
			s := synthX86()
			s.notes[2].desc = siginfo64(11, 0x80, 0)
			return s
		}, func(w *coreWant) { w.code, w.fault, w.hasFault = 0x80, 0, false }},
		{"no NT_SIGINFO: signal from pr_cursig", func() synthCore {
			s := synthX86()
			s.notes = append(s.notes[:2], s.notes[3:]...)
			return s
		}, func(w *coreWant) { w.code, w.fault, w.hasFault = 0, 0, false }},
		{"crash in JIT code", func() synthCore {
			s := synthX86()
			s.notes[0].desc = prstatus64(11, 4250, 27, map[int]uint64{16: 0x10000000})
			return s
		}, func(w *coreWant) { w.pc, w.module, w.offset, w.buildID = 0x10000000, "", 0, "" }},
		{"crash in a replaced library", func() synthCore {
			s := synthX86()
			s.notes[0].desc = prstatus64(11, 4250, 27, map[int]uint64{16: 0x7f0000000010})
			return s
		}, func(w *coreWant) { w.pc, w.module, w.offset, w.buildID = 0x7f0000000010, "libc.so.6", 0x10, "" }},
		{"header page not dumped: no build-id", func() synthCore {
			s := synthX86()
			s.loads[0] = synthLoad{vaddr: 0x400000, memsz: 0x1000}
			return s
		}, func(w *coreWant) { w.buildID = "" }},
		{"no PRSTATUS", func() synthCore {
			s := synthX86()
			s.notes = s.notes[1:7]
			return s
		}, func(w *coreWant) { w.threads, w.tid, w.pc, w.module, w.offset, w.buildID = 0, 0, 0, "", 0, "" }},
		{"no PRPSINFO: pid from the crashing thread", func() synthCore {
			s := synthX86()
			s.notes = append(s.notes[:1], s.notes[2:]...)
			return s
		}, func(w *coreWant) { w.pid, w.exePath, w.cmdline, w.uid, w.gid = 4250, "/usr/bin/app", "", nil, nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := readBytes(tt.core().bytes())
			if err != nil {
				t.Fatalf("ReadCore: %v", err)
			}
			w := x86Want()
			tt.change(&w)
			checkCore(t, c, w)
		})
	}
}

// Offsets into a synthetic 64-bit core with the layout synthCore.bytes writes.
const (
	offPhoff     = 32
	offShoff     = 40
	offPhentsize = 54
	offPhnum     = 56
	offShentsize = 58
	phdr0        = 64 // the PT_NOTE
)

func noteOffset(s synthCore) int { return 64 + 56*(1+len(s.loads)) }

// noteDescOffset is the file offset of note i's descriptor.
func noteDescOffset(s synthCore, i int) int {
	return noteOffset(s) + len(encodeNotes(s.notes[:i])) + 12 + len(pad4([]byte(s.notes[i].name+"\x00")))
}

func patch(b []byte, off int, v uint64, size int) []byte {
	b = bytes.Clone(b)
	switch size {
	case 2:
		le.PutUint16(b[off:], uint16(v))
	case 4:
		le.PutUint32(b[off:], uint32(v))
	case 8:
		le.PutUint64(b[off:], v)
	}
	return b
}

// TestReadCoreHostile feeds malformed and hostile input: ReadCore must not panic, must
// say what is wrong, and must not allocate in proportion to what the input claims.
func TestReadCoreHostile(t *testing.T) {
	x := synthX86()
	good := x.bytes()
	notes := noteOffset(x)
	rnd := rand.New(rand.NewSource(1))
	random := make([]byte, 64<<10)
	rnd.Read(random)
	elfRandom := append([]byte("\x7fELF\x02\x01\x01"), random[:4096]...)
	le.PutUint16(elfRandom[16:], uint16(elf.ET_CORE))

	xnum := patch(patch(patch(good, offPhnum, 0xffff, 2), offShoff, uint64(len(good)), 8), offShentsize, 64, 2)
	xnum = append(xnum, make([]byte, 64)...)
	le.PutUint32(xnum[len(good)+44:], 0xffffffff) // sh_info: the real phnum

	manyNotes := synthCore{machine: elf.EM_X86_64}
	for range 100000 {
		manyNotes.notes = append(manyNotes.notes, synthNote{"CORE", ntPrstatus, make([]byte, 36)})
	}
	bigFile := synthCore{machine: elf.EM_X86_64, notes: []synthNote{{"CORE", ntFile, make([]byte, maxFileNote+1)}}}

	tests := []struct {
		name     string
		data     []byte
		wantErr  error // nil: no error
		wantNil  bool  // no Core at all
		maxAlloc uint64
		check    func(t *testing.T, c *Core)
	}{
		{name: "empty", data: nil, wantErr: ErrNotELF, wantNil: true},
		{name: "three bytes of magic", data: []byte("\x7fEL"), wantErr: ErrNotELF, wantNil: true},
		{name: "text", data: []byte("Segmentation fault (core dumped)\n"), wantErr: ErrNotELF, wantNil: true},
		{name: "random bytes", data: random, wantErr: ErrNotELF, wantNil: true},
		{name: "ELF magic then random bytes", data: elfRandom, wantErr: ErrCorrupt},
		{name: "identification cut short", data: []byte("\x7fELF\x02\x01"), wantErr: ErrCorrupt, wantNil: true},
		{name: "header cut short", data: good[:40], wantErr: ErrCorrupt, wantNil: true},
		{name: "unknown class", data: patch(good, 4, 9, 2)[:64], wantErr: ErrCorrupt, wantNil: true},
		{name: "unknown byte order", data: patch(good, 5, 9, 2)[:64], wantErr: ErrCorrupt, wantNil: true},
		{name: "executable, not core", data: synthCore{machine: elf.EM_X86_64, etype: elf.ET_EXEC}.bytes(), wantErr: ErrNotCore, wantNil: true},
		{name: "huge phnum", data: patch(good, offPhnum, 0xfffe, 2), wantErr: ErrCorrupt,
			check: func(t *testing.T, c *Core) {
				if !c.Truncated || c.Signal != 11 {
					t.Errorf("Truncated %v Signal %d: want the real headers read and the rest flagged", c.Truncated, c.Signal)
				}
			}},
		{name: "PN_XNUM claims 2^32 headers", data: xnum, wantErr: ErrLimit,
			check: func(t *testing.T, c *Core) {
				if !c.Truncated || c.Signal != 11 {
					t.Errorf("Truncated %v Signal %d", c.Truncated, c.Signal)
				}
			}},
		{name: "PN_XNUM without section headers", data: patch(good, offPhnum, 0xffff, 2), wantErr: ErrCorrupt},
		{name: "huge phentsize", data: patch(patch(good, offPhentsize, 0xffff, 2), offPhnum, 0xfffe, 2), wantErr: ErrCorrupt},
		{name: "tiny phentsize", data: patch(good, offPhentsize, 8, 2), wantErr: ErrCorrupt},
		{name: "phoff past the end", data: patch(good, offPhoff, 1<<62, 8), wantErr: ErrCorrupt,
			check: func(t *testing.T, c *Core) {
				if !c.Truncated {
					t.Error("Truncated = false")
				}
			}},
		{name: "phoff at the top of the address space", data: patch(good, offPhoff, ^uint64(0)-10, 8), wantErr: ErrCorrupt},
		{name: "note segment size overflows", data: patch(good, phdr0+32, ^uint64(0), 8), wantErr: ErrCorrupt},
		{name: "note segment claims exabytes", data: patch(good, phdr0+32, 1<<60, 8), wantErr: ErrCorrupt,
			check: func(t *testing.T, c *Core) {
				if !c.Truncated || c.Signal != 11 || c.BuildID != synthBuildIDHex {
					t.Errorf("Truncated %v Signal %d BuildID %q: want the notes read anyway", c.Truncated, c.Signal, c.BuildID)
				}
			}},
		{name: "note namesz 2^32-1", data: patch(good, notes, 0xffffffff, 4), wantErr: ErrCorrupt},
		{name: "note descsz 2^32-1", data: patch(good, notes+4, 0xffffffff, 4), wantErr: ErrCorrupt},
		{name: "NT_FILE count 2^60", data: patch(good, noteDescOffset(x, 4), 1<<60, 8), wantErr: ErrCorrupt,
			check: func(t *testing.T, c *Core) {
				if len(c.Mappings) != 0 || c.Signal != 11 {
					t.Errorf("Mappings %d Signal %d", len(c.Mappings), c.Signal)
				}
			}},
		{name: "NT_FILE larger than the kernel writes", data: bigFile.bytes(), wantErr: ErrLimit, maxAlloc: 1 << 20},
		{name: "100000 threads", data: manyNotes.bytes(), wantErr: nil,
			check: func(t *testing.T, c *Core) {
				if c.Threads != 100000 {
					t.Errorf("Threads = %d", c.Threads)
				}
			}},
		{name: "notes with tiny descriptors", data: synthCore{machine: elf.EM_X86_64, notes: []synthNote{
			{"CORE", ntPrstatus, []byte{1, 2, 3}},
			{"CORE", ntPrpsinfo, []byte{1}},
			{"CORE", ntAuxv, []byte{1, 2, 3, 4, 5}},
			{"CORE", ntFile, []byte{1, 2}},
			{"CORE", ntSiginfo, []byte{1, 2, 3, 4}},
		}}.bytes(), wantErr: ErrCorrupt},
		{name: "32-bit with odd PRPSINFO sizes", data: synthCore{is32: true, machine: elf.EM_ARM, notes: []synthNote{
			{"CORE", ntPrpsinfo, make([]byte, 100)},
			{"CORE", ntPrstatus, make([]byte, 20)},
			{"CORE", ntFile, words(true, 1, 0, 0x1000, 0x2000, 0)},
		}}.bytes(), wantErr: ErrCorrupt},
		{name: "stray bytes after the notes", data: patch(good, phdr0+32, uint64(len(encodeNotes(x.notes))+5), 8), wantErr: ErrCorrupt},
		{name: "hostile module header", data: func() []byte {
			s := synthX86()
			page := moduleHeaderPage(synthBuildID)
			le.PutUint16(page[56:], 0xffff)       // phnum
			le.PutUint64(page[32:], ^uint64(0)-8) // phoff
			s.loads[0].data = page
			return s.bytes()
		}(), wantErr: nil, check: func(t *testing.T, c *Core) {
			if c.BuildID != "" || c.CrashModule != "app" {
				t.Errorf("BuildID %q CrashModule %q", c.BuildID, c.CrashModule)
			}
		}},
		{name: "hostile module note", data: func() []byte {
			s := synthX86()
			page := moduleHeaderPage(synthBuildID)
			le.PutUint32(page[0x200:], 0xfffffff0) // namesz
			s.loads[0].data = page
			return s.bytes()
		}(), wantErr: nil, check: func(t *testing.T, c *Core) {
			if c.BuildID != "" {
				t.Errorf("BuildID %q", c.BuildID)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			c, err := readBytes(tt.data)
			elapsed := time.Since(start)
			runtime.ReadMemStats(&after)
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if (c == nil) != tt.wantNil {
				t.Fatalf("Core = %+v, want nil: %v", c, tt.wantNil)
			}
			maxAlloc := tt.maxAlloc
			if maxAlloc == 0 {
				maxAlloc = 4 << 20
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > maxAlloc {
				t.Errorf("allocated %d bytes, want at most %d", alloc, maxAlloc)
			}
			if elapsed > 2*time.Second {
				t.Errorf("took %v", elapsed)
			}
			if err != nil {
				t.Logf("error: %v", err)
			}
			if tt.check != nil {
				tt.check(t, c)
			}
		})
	}
}

// TestReadCoreNotCore feeds a real executable.
func TestReadCoreNotCore(t *testing.T) {
	prog := cCore(t).prog
	f, err := os.Open(prog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if c, err := ReadCore(f, st.Size()); !errors.Is(err, ErrNotCore) || c != nil {
		t.Errorf("ReadCore(executable) = %v, %v; want nil, ErrNotCore", c, err)
	}
}

// failingReader fails every read past a point, as a vanished NFS file might.
type failingReader struct {
	r     *bytes.Reader
	after int64
}

var errDisk = errors.New("input/output error")

func (f failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.after {
		return 0, errDisk
	}
	return f.r.ReadAt(p, off)
}

func TestReadCoreReaderError(t *testing.T) {
	good := synthX86().bytes()
	for _, after := range []int64{0, 10, 64, 200, int64(len(good)) - 100} {
		c, err := ReadCore(failingReader{bytes.NewReader(good), after}, int64(len(good)))
		if !errors.Is(err, errDisk) {
			t.Errorf("after %d: err = %v, want the reader's error", after, err)
		}
		if errors.Is(err, ErrCorrupt) && strings.Contains(err.Error(), "cut off") {
			t.Errorf("after %d: an I/O error reported as truncation: %v", after, err)
		}
		_ = c
	}
}
