package analyze

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/go-delve/delve/pkg/dwarf/frame"
	"github.com/go-delve/delve/pkg/dwarf/op"

	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// maxExpr bounds a DWARF expression evaluated for a CFA or register rule.
const maxExpr = 256

// errOutermost ends a backtrace where the code says there is no caller.
var errOutermost = errors.New("outermost frame")

// unwinder unwinds the threads of one core.
type unwinder struct {
	a      *arch
	mem    *memory
	maps   []corefile.Mapping // by Start
	proc   *corefile.Process
	opener Opener
	mods   map[string]*module // by path
	// modErrs remembers why modules could not be used, for the reason.
	modErrs  map[string]string
	maxMods  int
	steps    int
	maxSteps int
}

// cursor is the state of one frame.
type cursor struct {
	r regs
	// exact: pc is where the frame is (frame 0, or interrupted by a
	// signal), not a return address, so it is looked up as is.
	exact bool
}

// mappingAt finds the NT_FILE mapping holding addr.
func (u *unwinder) mappingAt(addr uint64) (corefile.Mapping, bool) {
	i := sort.Search(len(u.maps), func(i int) bool { return u.maps[i].Start > addr }) - 1
	if i >= 0 && addr < u.maps[i].End {
		return u.maps[i], true
	}
	return corefile.Mapping{}, false
}

// moduleFor opens (once) the module behind mapping mp and returns it with its
// load bias; nil when it cannot be used.
func (u *unwinder) moduleFor(mp corefile.Mapping) (*module, uint64) {
	m, ok := u.mods[mp.Path]
	if !ok {
		if len(u.mods) >= u.maxMods {
			u.modErrs[ModuleBase(mp.Path)] = "too many modules"
			return nil, 0
		}
		ref := ModuleRef{Path: mp.Path, BuildID: u.proc.BuildID(mp), Start: mp.Start, End: mp.End}
		m = openModule(u.opener, ref)
		u.mods[mp.Path] = m
		if m.err != nil {
			u.modErrs[m.name] = m.err.Error()
		}
	}
	if m.ef == nil {
		return m, 0
	}
	bias, ok := m.bias(mp.Start, mp.FileOffset)
	if !ok {
		return m, 0
	}
	return m, bias
}

// thread unwinds one thread from its registers. The reason is "" when the
// backtrace reached the outermost frame.
func (u *unwinder) thread(start regs, limit int) (frames []coredogv1.StackFrame, reason string) {
	cur := cursor{r: start, exact: true}
	for len(frames) < limit {
		pc, ok := cur.r.get(u.a.pc)
		if !ok {
			return frames, "the program counter is unknown"
		}
		var mod *module
		var bias uint64
		mp, inMap := u.mappingAt(pc)
		if inMap {
			mod, bias = u.moduleFor(mp)
		}
		// A signal trampoline's pc is where the handler returned to: the
		// trampoline's first instruction, looked up as it is.
		sig := u.isSigreturn(mod, bias, pc)
		lookup := pc
		if !cur.exact && !sig && lookup > 0 {
			lookup--
		}
		f := coredogv1.StackFrame{PC: hexAddr(pc)}
		if inMap {
			f.Module = clipName(ModuleBase(mp.Path))
			if mod != nil {
				f.BuildID = mod.build
				if mod.ef == nil {
					f.Offset = hexAddr(pc - mp.Start + mp.FileOffset)
				} else {
					f.Offset = hexAddr(pc - bias)
					f.Function, f.File, f.Line = u.symbolize(mod, lookup-bias)
				}
			}
		}
		frames = append(frames, f)
		if f.Function == "main" || f.Function == "main.main" {
			// Where gdb stops too (backtrace past-main is off by default).
			return frames, ""
		}
		u.steps++
		if u.steps > u.maxSteps {
			return frames, "the unwinding budget is spent"
		}
		var next cursor
		var err error
		if sig {
			next, err = u.stepSigframe(cur)
		} else {
			next, err = u.step(cur, mod, bias, lookup)
		}
		if err == nil && f.Function == "runtime.sigpanic" {
			// Go's signal handler makes a goroutine that faulted look as if
			// it called runtime.sigpanic from the faulting instruction: the
			// caller's pc is that instruction, not a return address.
			next.exact = true
		}
		if errors.Is(err, errOutermost) {
			return frames, ""
		}
		if err != nil {
			return frames, err.Error()
		}
		cur = next
	}
	return frames, "more than " + strconv.Itoa(limit) + " frames"
}

func (u *unwinder) symbolize(m *module, pc uint64) (fn, file string, line int32) {
	fn, file, l := m.symbolize(pc)
	if l < 0 || l > 1<<30 {
		l = 0
	}
	if len(file) > 1024 {
		file = file[len(file)-1024:]
	}
	return fn, file, int32(l)
}

// step computes the caller's registers, from CFI when the module has an
// entry for pc, else by following the frame pointer.
func (u *unwinder) step(cur cursor, mod *module, bias, lookup uint64) (cursor, error) {
	sp, _ := cur.r.get(u.a.sp)
	if mod != nil && mod.ef != nil {
		fde, err := mod.fde(lookup - bias)
		if err == nil && fde != nil {
			next, err := u.stepCFI(cur, fde, bias, lookup)
			if err != nil {
				return next, err
			}
			return u.check(next, sp, strings.ContainsRune(fde.CIE.Augmentation, 'S'))
		}
	}
	next, leaf, err := u.stepNoCFI(cur, mod, bias, lookup)
	if err != nil {
		return next, err
	}
	if leaf {
		// The caller's stack pointer is this frame's: nothing was pushed.
		next.r.set(u.a.sp, sp)
		return u.check(next, sp-1, false)
	}
	return u.check(next, sp, false)
}

// stepNoCFI unwinds a frame that has no call frame information the way gdb's
// prologue analyzers do: a function whose prologue set up the frame pointer
// is followed through it; code with no known function start is taken as
// frameless (x86-64: the return address is at the stack pointer; arm64: in
// the link register), which is what a thread blocked in a system call stub
// looks like; anything else follows the frame pointer. leaf says the caller's
// stack pointer is this frame's.
func (u *unwinder) stepNoCFI(cur cursor, mod *module, bias, lookup uint64) (next cursor, leaf bool, err error) {
	var start uint64
	known := false
	if mod != nil && mod.ef != nil {
		if s, ok := mod.symbolAt(lookup - bias); ok {
			start, known = s.addr, true
		}
	}
	sp, _ := cur.r.get(u.a.sp)
	if u.a == archAMD64 {
		var code [4]byte
		pro := known && mod.readCode(start, code[:]) && code == [4]byte{0x55, 0x48, 0x89, 0xe5} // push %rbp; mov %rsp,%rbp
		off := lookup - bias - start
		switch {
		case pro && off >= 4:
			n, err := u.stepFP(cur)
			return n, false, err
		case pro && off >= 1:
			// After push %rbp: the caller's rbp at [rsp], the return address above.
			rbp, ok1 := u.mem.word64(sp)
			ra, ok2 := u.mem.word64(sp + 8)
			if !ok1 || !ok2 {
				return cur, false, errors.New("the stack is not in the core")
			}
			next = cursor{r: cur.r}
			next.r.set(u.a.fp, rbp)
			next.r.set(u.a.sp, sp+16)
			next.r.set(u.a.pc, ra)
			return next, false, nil
		case cur.exact || !known:
			ra, ok := u.mem.word64(sp)
			if !ok {
				return cur, false, errors.New("the stack is not in the core")
			}
			next = cursor{r: cur.r}
			next.r.set(u.a.sp, sp+8)
			next.r.set(u.a.pc, ra)
			return next, false, nil
		}
		n, err := u.stepFP(cur)
		return n, false, err
	}
	if cur.exact && !known {
		lr, ok := cur.r.get(u.a.lr)
		if !ok {
			return cur, false, errors.New("the link register is unknown")
		}
		next = cursor{r: cur.r}
		next.r.set(u.a.pc, lr&u.a.pcMask)
		return next, true, nil
	}
	n, err := u.stepFP(cur)
	return n, false, err
}

// check refuses a caller that makes no progress: the stack pointer must
// grow, except out of a signal trampoline, whose caller ran on another stack.
func (u *unwinder) check(next cursor, sp uint64, sigFrame bool) (cursor, error) {
	pc, ok := next.r.get(u.a.pc)
	if !ok {
		return next, errors.New("the return address is unknown")
	}
	if pc == 0 {
		return next, errOutermost
	}
	nsp, ok := next.r.get(u.a.sp)
	if !ok {
		return next, errors.New("the caller's stack pointer is unknown")
	}
	if !sigFrame && nsp <= sp {
		return next, errors.New("the stack does not unwind outwards (corrupt stack or a loop)")
	}
	if _, ok := u.mappingAt(pc); !ok && !u.executable(pc) {
		return next, fmt.Errorf("return address %s is in no executable mapping", hexAddr(pc))
	}
	next.exact = sigFrame
	return next, nil
}

// executable: pc is in some dumped or mapped region; anonymous executable
// memory (JIT code) has no NT_FILE entry but is a legitimate return address.
func (u *unwinder) executable(pc uint64) bool {
	_, err := u.mem.page(pc &^ (pageSize - 1))
	return err == nil && u.mem.pages[pc&^(pageSize-1)] != nil
}

func (u *unwinder) stepCFI(cur cursor, fde *frame.FrameDescriptionEntry, bias, lookup uint64) (next cursor, err error) {
	ctx, err := establish(fde, lookup-bias)
	if err != nil {
		return next, fmt.Errorf("bad call frame information: %w", err)
	}
	var cfa uint64
	switch ctx.CFA.Rule {
	case frame.RuleCFA:
		base, ok := cur.r.get(ctx.CFA.Reg)
		if !ok {
			return next, errors.New("the CFA's register is unknown")
		}
		cfa = base + uint64(ctx.CFA.Offset)
	case frame.RuleExpression:
		v, err := u.eval(cur, ctx.CFA.Expression, nil)
		if err != nil {
			return next, err
		}
		cfa = v
	default:
		return next, errors.New("unsupported CFA rule")
	}
	next.r = cur.r
	ra := ctx.RetAddrReg
	if ra >= maxRegs {
		return next, errors.New("unsupported return address column")
	}
	raRule, hasRA := ctx.Regs[ra]
	if hasRA && raRule.Rule == frame.RuleUndefined {
		return next, errOutermost
	}
	for reg, rule := range ctx.Regs {
		if reg >= maxRegs {
			continue
		}
		switch rule.Rule {
		case frame.RuleUndefined:
			next.r.unset(reg)
		case frame.RuleSameVal:
		case frame.RuleOffset:
			if v, ok := u.mem.word64(cfa + uint64(rule.Offset)); ok {
				next.r.set(reg, v)
			} else {
				next.r.unset(reg)
			}
		case frame.RuleValOffset:
			next.r.set(reg, cfa+uint64(rule.Offset))
		case frame.RuleRegister:
			if v, ok := cur.r.get(rule.Reg); ok {
				next.r.set(reg, v)
			} else {
				next.r.unset(reg)
			}
		case frame.RuleExpression, frame.RuleValExpression:
			v, err := u.eval(cur, rule.Expression, &cfa)
			if err == nil && rule.Rule == frame.RuleExpression {
				v, err = u.readWord(v)
			}
			if err != nil {
				next.r.unset(reg)
			} else {
				next.r.set(reg, v)
			}
		default:
			next.r.unset(reg)
		}
	}
	next.r.set(u.a.sp, cfa)
	// Without a rule the return address column keeps its value (arm64: x30
	// in a leaf function).
	rav, ok := next.r.get(ra)
	if !ok {
		return next, errors.New("the return address is not saved where the CFI says")
	}
	next.r.set(u.a.pc, rav&u.a.pcMask)
	return next, nil
}

func (u *unwinder) readWord(addr uint64) (uint64, error) {
	v, ok := u.mem.word64(addr)
	if !ok {
		return 0, fmt.Errorf("memory at %s is not in the core", hexAddr(addr))
	}
	return v, nil
}

// eval runs a DWARF expression with delve's evaluator; cfa, when given, is
// pushed first as DW_CFA_expression requires.
func (u *unwinder) eval(cur cursor, expr []byte, cfa *uint64) (v uint64, err error) {
	if len(expr) == 0 || len(expr) > maxExpr || containsUnbounded(expr) {
		return 0, errors.New("unsupported DWARF expression")
	}
	prog := expr
	if cfa != nil {
		prog = make([]byte, 0, 9+len(expr))
		prog = append(prog, byte(op.DW_OP_const8u))
		prog = binary.LittleEndian.AppendUint64(prog, *cfa)
		prog = append(prog, expr...)
	}
	dregs := make([]*op.DwarfRegister, maxRegs)
	for i := range uint64(maxRegs) {
		if x, ok := cur.r.get(i); ok {
			dregs[i] = op.DwarfRegisterFromUint64(x)
		}
	}
	dr := op.NewDwarfRegisters(0, dregs, binary.LittleEndian, u.a.pc, u.a.sp, u.a.fp, u.a.lr)
	read := func(buf []byte, addr uint64) (int, error) {
		if len(buf) > 8 || !u.mem.read(addr, buf) {
			return 0, errors.New("memory not in the core")
		}
		return len(buf), nil
	}
	defer func() {
		if p := recover(); p != nil {
			v, err = 0, fmt.Errorf("malformed DWARF expression: %v", p)
		}
	}()
	x, pieces, err := op.ExecuteStackProgram(*dr, prog, 8, read)
	if err != nil || pieces != nil {
		return 0, errors.New("unsupported DWARF expression")
	}
	return uint64(x), nil
}

// containsUnbounded refuses expressions with operations whose operands can
// ask the evaluator for an allocation of any size (DW_OP_implicit_value).
func containsUnbounded(expr []byte) bool {
	return slices.Contains(expr, byte(op.DW_OP_implicit_value))
}

func establish(fde *frame.FrameDescriptionEntry, pc uint64) (ctx *frame.FrameContext, err error) {
	defer func() {
		if p := recover(); p != nil {
			ctx, err = nil, fmt.Errorf("%v", p)
		}
	}()
	return fde.EstablishFrame(pc)
}

// stepFP follows the frame-pointer chain: [fp] is the caller's frame
// pointer and [fp+8] the return address on both machines.
func (u *unwinder) stepFP(cur cursor) (cursor, error) {
	fp, ok := cur.r.get(u.a.fp)
	if !ok || fp == 0 {
		return cur, errors.New("no call frame information and no frame pointer")
	}
	savedFP, ok1 := u.mem.word64(fp)
	ra, ok2 := u.mem.word64(fp + 8)
	if !ok1 || !ok2 {
		return cur, errors.New("no call frame information, and the frame pointer leads out of the core")
	}
	next := cursor{r: cur.r}
	next.r.set(u.a.fp, savedFP)
	next.r.set(u.a.sp, fp+16)
	next.r.set(u.a.pc, ra&u.a.pcMask)
	if savedFP != 0 && savedFP <= fp {
		return next, errors.New("the frame-pointer chain does not go outwards (corrupt stack or a loop)")
	}
	return next, nil
}

// Signal return trampolines: what the kernel returns to from a handler
// (glibc's __restore_rt, Go's runtime.sigreturn__sigaction, musl's).
var (
	sigreturnAMD64 = []byte{0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05} // mov $15,%rax; syscall
	sigreturnARM64 = []byte{0x68, 0x11, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4}       // mov x8,#139; svc #0
)

// isSigreturn reports whether pc is the first instruction of a signal
// return trampoline, read from the module's file or else from the core.
func (u *unwinder) isSigreturn(mod *module, bias, pc uint64) bool {
	want := sigreturnAMD64
	if u.a == archARM64 {
		want = sigreturnARM64
	}
	code := make([]byte, len(want))
	ok := false
	if mod != nil && mod.ef != nil {
		ok = mod.readCode(pc-bias, code)
	}
	if !ok {
		ok = u.mem.read(pc, code)
	}
	return ok && bytes.Equal(code, want)
}

// Where the interrupted registers are in a signal frame, from the stack
// pointer at the trampoline (Linux's rt_sigframe), and their order.
const (
	// x86-64: after the handler's ret, sp is &uc; uc_mcontext is 40 bytes in.
	sigcontextAMD64 = 40
	// arm64: siginfo (128), then ucontext's uc_mcontext at 176, whose
	// regs[] follow fault_address (8).
	sigcontextARM64 = 128 + 176 + 8
)

// sigcontextAMD64Regs is struct sigcontext's r8..rip as DWARF numbers.
var sigcontextAMD64Regs = []uint64{8, 9, 10, 11, 12, 13, 14, 15, 5, 4, 6, 3, 1, 0, 2, 7, 16}

// sigcontextARM64Regs is struct sigcontext's regs[31], sp, pc.
var sigcontextARM64Regs = func() []uint64 {
	r := make([]uint64, 33)
	for i := range r {
		r[i] = uint64(i)
	}
	return r
}()

// stepSigframe unwinds a signal trampoline: the caller is the interrupted
// code, with every register as the kernel saved it.
func (u *unwinder) stepSigframe(cur cursor) (cursor, error) {
	sp, ok := cur.r.get(u.a.sp)
	if !ok {
		return cur, errors.New("the stack pointer is unknown")
	}
	var next cursor
	order := sigcontextAMD64Regs
	base := sp + sigcontextAMD64
	if u.a == archARM64 {
		order, base = sigcontextARM64Regs, sp+sigcontextARM64
	}
	for i, reg := range order {
		v, ok := u.mem.word64(base + uint64(8*i))
		if !ok {
			return cur, errors.New("the signal frame is not in the core")
		}
		next.r.set(reg, v)
	}
	return u.check(next, sp, true)
}

func hexAddr(v uint64) string { return "0x" + strconv.FormatUint(v, 16) }
