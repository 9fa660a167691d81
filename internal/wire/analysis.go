package wire

import (
	"strings"
	"unicode"
	"unicode/utf8"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// The analysis route: GET DumpsPath + name + AnalysisSuffix returns the
// Analysis the agent computed at capture, as JSON of at most
// MaxAnalysisBytes.
const (
	AnalysisSuffix = "/analysis"
	// MaxAnalysisBytes bounds the analysis document on both sides.
	MaxAnalysisBytes = 4 << 20
	// MaxAnalysisThreads bounds the threads an analysis carries.
	MaxAnalysisThreads = 256
	// MaxThreadFrames bounds the frames of one thread in an analysis.
	MaxThreadFrames = 64
)

// Analysis is the backtrace of every thread of a core, computed on the node.
type Analysis struct {
	// Outcome, Reason, Threads and CrashingThread mean what they mean in
	// the API's CrashAnalysis.
	Outcome        coredogv1.AnalysisOutcome `json:"outcome"`
	Reason         string                    `json:"reason,omitempty"`
	Threads        int32                     `json:"threads,omitempty"`
	CrashingThread int32                     `json:"crashingThread,omitempty"`
	// Stacks are the unwound threads, the crashing thread first.
	Stacks []ThreadStack `json:"stacks,omitempty"`
}

// ThreadStack is one thread's backtrace, innermost frame first.
type ThreadStack struct {
	TID    int32                  `json:"tid"`
	Reason string                 `json:"reason,omitempty"`
	Frames []coredogv1.StackFrame `json:"frames,omitempty"`
}

// Bounds of the strings of an analysis, the API's.
const (
	maxModule   = 255
	maxBuildID  = 128
	maxFunction = 512
	maxFile     = 1024
	maxReason   = 256
	maxHexAddr  = 18
)

// Sanitize makes an analysis that came from an agent safe to store and to
// show: at most MaxAnalysisThreads threads of MaxThreadFrames frames, every
// string within the API's bounds and free of control characters, addresses
// and build-ids hexadecimal or dropped, numbers not negative, and an outcome
// the API knows. The manager calls it on every analysis it reads; the agent
// calls it on what it serves, so both sides agree on what a frame can be.
func (a *Analysis) Sanitize() {
	switch a.Outcome {
	case coredogv1.AnalysisComplete, coredogv1.AnalysisPartial, coredogv1.AnalysisUnavailable:
	default:
		a.Outcome, a.Reason = coredogv1.AnalysisUnavailable, "the agent sent an analysis with an unknown outcome"
	}
	a.Reason = SafeText(a.Reason, maxReason)
	a.Threads = max(a.Threads, 0)
	a.CrashingThread = max(a.CrashingThread, 0)
	if len(a.Stacks) > MaxAnalysisThreads {
		a.Stacks = a.Stacks[:MaxAnalysisThreads]
	}
	for i := range a.Stacks {
		s := &a.Stacks[i]
		s.TID = max(s.TID, 0)
		s.Reason = SafeText(s.Reason, maxReason)
		if len(s.Frames) > MaxThreadFrames {
			s.Frames = s.Frames[:MaxThreadFrames]
		}
		for j := range s.Frames {
			sanitizeFrame(&s.Frames[j])
		}
	}
}

func sanitizeFrame(f *coredogv1.StackFrame) {
	f.Module = SafeText(f.Module, maxModule)
	f.Function = SafeText(f.Function, maxFunction)
	f.File = SafeText(f.File, maxFile)
	f.Line = max(f.Line, 0)
	if !isHexAddr(f.PC) {
		f.PC = ""
	}
	if !isHexAddr(f.Offset) {
		f.Offset = ""
	}
	if len(f.BuildID) > maxBuildID || !isLowerHex(f.BuildID) {
		f.BuildID = ""
	}
}

func isHexAddr(s string) bool {
	return len(s) > 2 && len(s) <= maxHexAddr && strings.HasPrefix(s, "0x") && isLowerHex(s[2:])
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// SafeText is s as valid UTF-8 without control or format characters (each
// becomes "?"), at most n bytes.
func SafeText(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return '?'
		}
		return r
	}, s)
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// Status is what of an analysis goes into a CoreDump's status: the outcome
// and the crashing thread's first MaxAnalysisFrames frames. Modules are not
// the analysis's to set.
func (a *Analysis) Status() *coredogv1.CrashAnalysis {
	out := &coredogv1.CrashAnalysis{Outcome: a.Outcome, Reason: a.Reason, Threads: a.Threads, CrashingThread: a.CrashingThread}
	for _, s := range a.Stacks {
		if s.TID == a.CrashingThread {
			out.Frames = append([]coredogv1.StackFrame(nil), s.Frames[:min(len(s.Frames), coredogv1.MaxAnalysisFrames)]...)
			break
		}
	}
	return out
}
