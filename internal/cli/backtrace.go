package cli

import (
	"strconv"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// FormatFrame spells one frame of status.analysis the way gdb's backtrace
// does: "#N  0xPC in function (module+0xoffset) at file:line". Everything
// in it came from a node and is written through safe().
func FormatFrame(i int, f coredogv1.StackFrame) string {
	s := "#" + strconv.Itoa(i) + "  " + f.PC
	fn := f.Function
	if fn == "" {
		fn = "??"
	}
	s += " in " + fn
	if f.Module != "" {
		s += " (" + f.Module
		if f.Offset != "" {
			s += "+" + f.Offset
		}
		s += ")"
	}
	if f.File != "" {
		s += " at " + f.File
		if f.Line > 0 {
			s += ":" + strconv.Itoa(int(f.Line))
		}
	}
	return s
}

// describeBacktrace writes the Backtrace section: the crashing thread's
// frames as the agent unwound them on the node, or why there are none.
func describeBacktrace(p *describer, cd *coredogv1.CoreDump) {
	a := cd.Status.Analysis
	if a == nil || a.Outcome == "" {
		p.line(0, "Backtrace", "")
		return
	}
	head := string(a.Outcome)
	if a.CrashingThread > 0 {
		head += ", thread " + strconv.Itoa(int(a.CrashingThread))
	}
	if a.Threads > 0 {
		head += " of " + strconv.Itoa(int(a.Threads))
	}
	if a.Reason != "" {
		head += ": " + a.Reason
	}
	p.line(0, "Backtrace", head)
	for i, f := range a.Frames {
		p.line(1, "", FormatFrame(i, f))
	}
}
