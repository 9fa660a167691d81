package analyze

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strings"

	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
)

// Bounds of one analysis. With them a core of any size and any number of
// threads costs at most maxPageReads pages of core I/O, maxCachedPages
// pages of memory for stack data, maxModules opened files and maxSteps
// unwinding steps.
const (
	maxCachedPages = 1024
	maxPageReads   = 16384
	maxModules     = 64
	maxSteps       = 16384
	maxPrstatus    = 4096
	maxReason      = 256
)

// Analyze reads the core of the given size and unwinds its threads,
// crashing thread first, opening binaries through o. It never fails: what
// it cannot do is in the Outcome and Reason.
func Analyze(r io.ReaderAt, size int64, o Opener) *wire.Analysis {
	p, err := corefile.ReadProcess(r, size, wire.MaxAnalysisThreads)
	if p == nil {
		return &wire.Analysis{Outcome: coredogv1.AnalysisUnavailable, Reason: clipReason("not an ELF core: " + errString(err))}
	}
	return analyzeProcess(r, size, p, err, o)
}

func errString(err error) string {
	if err == nil {
		return "unknown error"
	}
	return err.Error()
}

func analyzeProcess(r io.ReaderAt, size int64, p *corefile.Process, readErr error, o Opener) *wire.Analysis {
	out := &wire.Analysis{Threads: int32(min(p.Threads, 1<<30))}
	a := archOf(p.ELFMachine)
	if a == nil || !p.Is64 {
		out.Outcome, out.Reason = coredogv1.AnalysisUnavailable, clipReason("unsupported machine "+p.Machine)
		return out
	}
	if len(p.ThreadNotes) == 0 {
		out.Outcome, out.Reason = coredogv1.AnalysisUnavailable, "the core holds no thread registers"
		return out
	}
	maps := slices.Clone(p.Mappings)
	sort.Slice(maps, func(i, j int) bool { return maps[i].Start < maps[j].Start })
	u := &unwinder{a: a, mem: newMemory(r, size, p.ByteOrder, p.Segments, maxPageReads), maps: maps, proc: p,
		opener: o, mods: map[string]*module{}, modErrs: map[string]string{}, maxMods: maxModules, maxSteps: maxSteps}
	defer func() {
		for _, m := range u.mods {
			m.close()
		}
	}()
	var problems, threadProblems []string
	if readErr != nil {
		problems = append(problems, "the core is damaged: "+readErr.Error())
	}
	for i, n := range p.ThreadNotes {
		tid, start, err := u.readPrstatus(r, n)
		ts := wire.ThreadStack{TID: tid}
		if err != nil {
			ts.Reason = err.Error()
		} else {
			ts.Frames, ts.Reason = u.thread(start, wire.MaxThreadFrames)
		}
		if i == 0 {
			out.CrashingThread = tid
		}
		if ts.Reason != "" {
			ts.Reason = clipReason(ts.Reason)
			threadProblems = append(threadProblems, fmt.Sprintf("thread %d: %s", tid, ts.Reason))
		}
		out.Stacks = append(out.Stacks, ts)
	}
	if p.Threads > len(p.ThreadNotes) {
		problems = append(problems, fmt.Sprintf("%d of %d threads unwound", len(p.ThreadNotes), p.Threads))
	}
	defer func() {
		// The reason is short: what concerns the whole core first.
		if len(threadProblems) > 0 {
			out.Outcome = coredogv1.AnalysisPartial
			out.Reason = clipReason(strings.Join(append(problems, threadProblems...), "; "))
		}
	}()
	// Modules that frames landed in but that could not be read.
	used := map[string]bool{}
	for _, s := range out.Stacks {
		for _, f := range s.Frames {
			used[f.Module] = true
		}
	}
	for _, name := range slices.Sorted(mapsKeys(u.modErrs)) {
		if used[name] {
			problems = append(problems, name+": "+u.modErrs[name])
		}
	}
	out.Outcome = coredogv1.AnalysisComplete
	if len(problems) > 0 {
		out.Outcome, out.Reason = coredogv1.AnalysisPartial, clipReason(strings.Join(problems, "; "))
	}
	return out
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// readPrstatus reads one NT_PRSTATUS: the thread ID and its registers.
func (u *unwinder) readPrstatus(r io.ReaderAt, n corefile.NoteRef) (int32, regs, error) {
	var rs regs
	need := uint64(prRegOff + 8*len(u.a.prstatus))
	if n.Size < need || n.Size > maxPrstatus {
		return 0, rs, fmt.Errorf("NT_PRSTATUS of %d bytes", n.Size)
	}
	d := make([]byte, need)
	if got, err := r.ReadAt(d, int64(n.Offset)); got < len(d) {
		return 0, rs, fmt.Errorf("reading NT_PRSTATUS: %w", errors.Join(err, io.ErrUnexpectedEOF))
	}
	bo := u.mem.bo
	tid := int32(bo.Uint32(d[prPidOff:]))
	for i, reg := range u.a.prstatus {
		if reg >= 0 {
			rs.set(uint64(reg), bo.Uint64(d[prRegOff+8*i:]))
		}
	}
	return max(tid, 0), rs, nil
}

func clipReason(s string) string {
	if len(s) <= maxReason {
		return s
	}
	return strings.ToValidUTF8(s[:maxReason-3], "") + "..."
}
