package v1alpha1

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPhaseIsFinal(t *testing.T) {
	for p, want := range map[Phase]bool{
		"": false, PhasePending: false, PhaseUploading: false,
		PhaseUploaded: true, PhaseSkipped: true, PhaseFailed: true,
	} {
		if got := p.IsFinal(); got != want {
			t.Errorf("%q.IsFinal() = %v, want %v", p, got, want)
		}
	}
}

func TestNodeMayRelease(t *testing.T) {
	for p, want := range map[Phase]bool{
		"": false, PhasePending: false, PhaseUploading: false,
		PhaseUploaded: true, PhaseSkipped: true, PhaseFailed: false,
	} {
		if got := p.NodeMayRelease(); got != want {
			t.Errorf("%q.NodeMayRelease() = %v, want %v", p, got, want)
		}
	}
}

func TestCrashTime(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	created := metav1.NewTime(now)
	detected := metav1.NewTime(now.Add(-time.Hour))
	dumped := metav1.NewTime(now.Add(-48 * time.Hour))
	for _, tc := range []struct {
		name string
		cd   CoreDump
		want time.Time
	}{
		{"dumpedAt first", CoreDump{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: created},
			Spec: CoreDumpSpec{DetectedAt: detected, Process: ProcessInfo{DumpedAt: &dumped}}}, dumped.Time},
		{"then detectedAt", CoreDump{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: created},
			Spec: CoreDumpSpec{DetectedAt: detected}}, detected.Time},
		{"then creation", CoreDump{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: created}}, created.Time},
	} {
		if got := tc.cd.CrashTime(); !got.Equal(tc.want) {
			t.Errorf("%s: CrashTime = %v, want %v", tc.name, got, tc.want)
		}
	}

	zero := metav1.Time{}
	if got := (&CoreDump{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: created},
		Spec: CoreDumpSpec{DetectedAt: detected, Process: ProcessInfo{DumpedAt: &zero}}}).CrashTime(); !got.Equal(detected.Time) {
		t.Errorf("zero dumpedAt: CrashTime = %v, want detectedAt %v", got, detected.Time)
	}
}
