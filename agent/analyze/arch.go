package analyze

import "debug/elf"

// maxRegs covers the DWARF registers unwinding tracks: x86-64 0..16 (rip
// is 16), arm64 0..32 (x0..x30, sp 31, pc 32).
const maxRegs = 33

// regs is a register set by DWARF number, with which are known.
type regs struct {
	v     [maxRegs]uint64
	known uint64
}

func (r *regs) get(n uint64) (uint64, bool) {
	if n >= maxRegs || r.known&(1<<n) == 0 {
		return 0, false
	}
	return r.v[n], true
}

func (r *regs) set(n, v uint64) {
	if n < maxRegs {
		r.v[n], r.known = v, r.known|1<<n
	}
}

func (r *regs) unset(n uint64) {
	if n < maxRegs {
		r.known &^= 1 << n
	}
}

// arch is what unwinding needs to know of a machine.
type arch struct {
	name      string
	pc, sp    uint64 // DWARF numbers
	fp, lr    uint64
	raDefault uint64 // the return-address column of its CIEs
	// prstatus maps elf_gregset_t (pr_reg) word i to a DWARF number (-1: none).
	prstatus []int
	// pcMask strips pointer-authentication bits from return addresses.
	pcMask uint64
}

const noLR = ^uint64(0)

var (
	// struct user_regs_struct: r15 r14 r13 r12 rbp rbx r11 r10 r9 r8 rax
	// rcx rdx rsi rdi orig_rax rip cs eflags rsp ...
	archAMD64 = &arch{name: "x86_64", pc: 16, sp: 7, fp: 6, lr: noLR, raDefault: 16,
		prstatus: []int{15, 14, 13, 12, 6, 3, 11, 10, 9, 8, 0, 2, 1, 4, 5, -1, 16, -1, -1, 7},
		pcMask:   ^uint64(0)}
	// struct user_pt_regs: regs[31], sp, pc, pstate. Return addresses may
	// carry a pointer-authentication code above bit 47.
	archARM64 = &arch{name: "aarch64", pc: 32, sp: 31, fp: 29, lr: 30, raDefault: 30,
		prstatus: arm64Prstatus(), pcMask: 1<<48 - 1}
)

func arm64Prstatus() []int {
	m := make([]int, 33)
	for i := range m {
		m[i] = i // x0..x30, sp (31), pc (32)
	}
	return m
}

func archOf(m elf.Machine) *arch {
	switch m {
	case elf.EM_X86_64:
		return archAMD64
	case elf.EM_AARCH64:
		return archARM64
	}
	return nil
}

// prstatus register offsets (64-bit struct elf_prstatus): pr_pid at 32,
// pr_reg at 112.
const (
	prPidOff = 32
	prRegOff = 112
)
