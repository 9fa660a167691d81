package analyze

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/go-delve/delve/pkg/dwarf/frame"

	"github.com/coredog/coredog/agent/corefile"
)

// There are no arm64 cores on the machines CoreDog is tested on: these
// tests give the arm64 register mapping, CFI rules and signal frames
// synthesized memory and call frame information instead.

const arm64Stack = 0x7ff0_0000_0000

// stackMemory is a memory with one segment of words at arm64Stack.
func stackMemory(ws map[uint64]uint64, size int) *memory {
	data := make([]byte, size)
	for addr, v := range ws {
		binary.LittleEndian.PutUint64(data[addr-arm64Stack:], v)
	}
	return newMemory(bytes.NewReader(data), int64(len(data)), binary.LittleEndian,
		[]corefile.Segment{{Vaddr: arm64Stack, Filesz: uint64(len(data)), Offset: 0}}, 64)
}

// TestARM64CFIRules: a typical arm64 prologue's CFI (stp x29, x30,
// [sp, #-32]!; mov x29, sp) as .debug_frame, run by delve's interpreter
// and applied by stepCFI: CFA = sp + 32, x29 and x30 saved at CFA-32 and
// CFA-24, the return address taken from x30 without its pointer
// authentication code.
func TestARM64CFIRules(t *testing.T) {
	le := binary.LittleEndian
	var cie bytes.Buffer
	cieBody := []byte{
		1,           // version
		0,           // augmentation ""
		4,           // code alignment
		0x78,        // data alignment -8 (SLEB128)
		30,          // return address column: x30
		0x0c, 31, 0, // DW_CFA_def_cfa sp, 0
	}
	_ = binary.Write(&cie, le, uint32(4+len(cieBody)))
	_ = binary.Write(&cie, le, uint32(0xffffffff))
	cie.Write(cieBody)
	var fde bytes.Buffer
	fdeBody := []byte{
		0x41,     // DW_CFA_advance_loc 1 (4 bytes)
		0x0e, 32, // DW_CFA_def_cfa_offset 32
		0x9d, 4, // DW_CFA_offset x29, 4*-8 = -32
		0x9e, 3, // DW_CFA_offset x30, 3*-8 = -24
	}
	_ = binary.Write(&fde, le, uint32(4+8+8+len(fdeBody)))
	_ = binary.Write(&fde, le, uint32(0)) // CIE at offset 0
	_ = binary.Write(&fde, le, uint64(0x1000))
	_ = binary.Write(&fde, le, uint64(0x100))
	fde.Write(fdeBody)
	fdes, err := frame.Parse(append(cie.Bytes(), fde.Bytes()...), le, 0, 8, 0)
	if err != nil || len(fdes) != 1 {
		t.Fatalf("parsing the synthesized CFI: %v (%d FDEs)", err, len(fdes))
	}
	sp := uint64(arm64Stack + 0x100)
	const pac = 0x002a_0000_0000_0000
	mem := stackMemory(map[uint64]uint64{sp: arm64Stack + 0x400, sp + 8: pac | 0x4321}, 0x1000)
	u := &unwinder{a: archARM64, mem: mem}
	var cur cursor
	cur.r.set(32, 0x1008)
	cur.r.set(31, sp)
	cur.r.set(29, 0x5555)
	cur.r.set(30, 0x6666)
	cur.exact = true
	next, err := u.stepCFI(cur, fdes[0], 0, 0x1008)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		reg  uint64
		want uint64
	}{{32, 0x4321}, {31, sp + 32}, {29, arm64Stack + 0x400}, {30, pac | 0x4321}} {
		if got, ok := next.r.get(c.reg); !ok || got != c.want {
			t.Errorf("register %d = %#x (%v), want %#x", c.reg, got, ok, c.want)
		}
	}
	// Before the prologue ran (at the FDE's first instruction) the return
	// address is still in x30.
	next, err = u.stepCFI(cur, fdes[0], 0, 0x1000)
	if err != nil {
		t.Fatal(err)
	}
	if pc, _ := next.r.get(32); pc != 0x6666 {
		t.Errorf("at entry: pc %#x, want x30 (0x6666)", pc)
	}
}

// TestARM64RegistersAndFramePointers: NT_PRSTATUS's user_pt_regs map to
// DWARF x0..x30, sp, pc; a leaf frame without CFI returns through the link
// register, and frame records (x29 → [previous x29, return address]) lead
// outwards until a zero return address.
func TestARM64RegistersAndFramePointers(t *testing.T) {
	fp1, fp2 := uint64(arm64Stack+0x200), uint64(arm64Stack+0x300)
	mem := stackMemory(map[uint64]uint64{fp1: fp2, fp1 + 8: 0x3000, fp2: 0, fp2 + 8: 0}, 0x1000)
	prstatus := make([]byte, prRegOff+8*34)
	binary.LittleEndian.PutUint32(prstatus[prPidOff:], 77)
	for i, v := range map[int]uint64{0: 0xa0, 29: fp1, 30: 0x2000, 31: arm64Stack + 0x100, 32: 0x1000} {
		binary.LittleEndian.PutUint64(prstatus[prRegOff+8*i:], v)
	}
	u := &unwinder{a: archARM64, mem: mem, mods: map[string]*module{}, modErrs: map[string]string{}, maxSteps: 100,
		maps: []corefile.Mapping{{Start: 0x1000, End: 0x4000, Path: "/prog"}}, proc: &corefile.Process{Core: &corefile.Core{}}, opener: HostRoot{}}
	tid, regs, err := u.readPrstatus(bytes.NewReader(prstatus), corefile.NoteRef{Offset: 0, Size: uint64(len(prstatus))})
	if err != nil || tid != 77 {
		t.Fatalf("tid %d, %v", tid, err)
	}
	if x0, _ := regs.get(0); x0 != 0xa0 {
		t.Errorf("x0 = %#x", x0)
	}
	frames, reason := u.thread(regs, 16)
	var pcs []string
	for _, f := range frames {
		pcs = append(pcs, f.PC)
	}
	want := []string{"0x1000", "0x2000", "0x3000"}
	if len(pcs) != len(want) || pcs[0] != want[0] || pcs[1] != want[1] || pcs[2] != want[2] || reason != "" {
		t.Errorf("frames %v (%q), want %v", pcs, reason, want)
	}
}

// TestARM64SignalFrame: the registers of code a signal interrupted are read
// from the rt_sigframe's sigcontext, 312 bytes above the stack pointer at
// the trampoline.
func TestARM64SignalFrame(t *testing.T) {
	sp := uint64(arm64Stack + 0x100)
	ws := map[uint64]uint64{}
	for i := range uint64(33) {
		ws[sp+sigcontextARM64+8*i] = 0x100 + i
	}
	ws[sp+sigcontextARM64+8*31] = arm64Stack + 0x800 // interrupted sp
	ws[sp+sigcontextARM64+8*32] = 0x1234             // interrupted pc
	u := &unwinder{a: archARM64, mem: stackMemory(ws, 0x1000), maps: []corefile.Mapping{{Start: 0x1000, End: 0x2000, Path: "/prog"}}}
	var cur cursor
	cur.r.set(31, sp)
	next, err := u.stepSigframe(cur)
	if err != nil {
		t.Fatal(err)
	}
	if pc, _ := next.r.get(32); pc != 0x1234 || !next.exact {
		t.Errorf("pc %#x exact %v", pc, next.exact)
	}
	if x29, _ := next.r.get(29); x29 != 0x100+29 {
		t.Errorf("x29 %#x", x29)
	}
	if !bytes.Equal(sigreturnARM64, []byte{0x68, 0x11, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4}) {
		t.Error("the trampoline is mov x8, #139; svc #0")
	}
}
