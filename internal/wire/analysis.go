package wire

import (
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
