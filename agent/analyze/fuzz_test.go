package analyze_test

import (
	"debug/elf"
	"testing"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
)

// FuzzAnalyze feeds hostile cores (notes, registers, segments, mappings) to
// the whole analysis: it must not panic, must stay within its bounds and
// must always say something.
func FuzzAnalyze(f *testing.F) {
	f.Add(synthCore(elf.EM_X86_64, []synthThread{{tid: 1, regs: amd64Regs(0x1000, stackTop, stackTop)}},
		[]synthSeg{{stackTop, words(0x1000, stackTop+16, 0x1000, 0)}}, progAt(0x1000)))
	f.Add(synthCore(elf.EM_AARCH64, []synthThread{{tid: 1, regs: arm64Regs(0x2000, stackTop, stackTop, 0x2000)}},
		[]synthSeg{{stackTop, words(stackTop+16, 0x2000, 0, 0)}}, progAt(0x2000)))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, core []byte) {
		a := analyzeBytes(t, core, noModules{})
		switch a.Outcome {
		case coredogv1.AnalysisComplete, coredogv1.AnalysisPartial, coredogv1.AnalysisUnavailable:
		default:
			t.Fatalf("outcome %q", a.Outcome)
		}
		if len(a.Reason) > 256 || len(a.Stacks) > wire.MaxAnalysisThreads {
			t.Fatalf("reason of %d bytes, %d stacks", len(a.Reason), len(a.Stacks))
		}
		for _, s := range a.Stacks {
			if len(s.Frames) > wire.MaxThreadFrames {
				t.Fatalf("%d frames", len(s.Frames))
			}
		}
	})
}
