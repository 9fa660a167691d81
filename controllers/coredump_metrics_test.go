package controllers

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func dumpAt(policy, ns, workload, sig string, phase coredogv1.Phase, reason string, at time.Time) coredogv1.CoreDump {
	cd := coredogv1.CoreDump{}
	cd.Spec.PolicyName, cd.Spec.Signature, cd.Spec.DetectedAt = policy, sig, metav1.NewTime(at)
	cd.Status.Phase, cd.Status.Reason = phase, reason
	if ns != "" {
		cd.Status.Pod = &coredogv1.PodReference{Namespace: ns, WorkloadKind: "Deployment", WorkloadName: workload}
	}
	return cd
}

func TestCountDumps(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	got := countDumps([]coredogv1.CoreDump{
		dumpAt("a", "ns", "w", "s", "", "", t0),
		dumpAt("a", "ns", "w", "s", coredogv1.PhaseUploading, coredogv1.ReasonUploadRetrying, t0),
		dumpAt("a", "ns", "w", "s", coredogv1.PhaseUploading, coredogv1.ReasonUploadRetrying, t0),
		dumpAt("b", "", "", "", coredogv1.PhaseUploaded, coredogv1.ReasonUploaded, t0),
	})
	want := map[[3]string]int{
		{"a", "Pending", ""}:                 1,
		{"a", "Uploading", "UploadRetrying"}: 2,
		{"b", "Uploaded", "Uploaded"}:        1,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("countDumps = %v, want %v", got, want)
	}
}

func TestFirstSeen(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	h := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Hour) }
	for _, tc := range []struct {
		name  string
		dumps []coredogv1.CoreDump
		limit int
		want  []signatureSeen
	}{
		{"oldest dump of a signature wins", []coredogv1.CoreDump{
			dumpAt("p", "ns", "w", "s1", "", "", h(3)),
			dumpAt("p", "ns", "w", "s1", "", "", h(1)),
			dumpAt("p", "ns", "w", "s1", "", "", h(2)),
		}, 10, []signatureSeen{{[4]string{"ns", "Deployment", "w", "s1"}, h(1)}}},
		{"per workload; no signature, no series", []coredogv1.CoreDump{
			dumpAt("p", "ns", "w", "s1", "", "", h(1)),
			dumpAt("p", "ns", "v", "s1", "", "", h(2)),
			dumpAt("p", "ns", "v", "", "", "", h(0)),
		}, 10, []signatureSeen{
			{[4]string{"ns", "Deployment", "v", "s1"}, h(2)},
			{[4]string{"ns", "Deployment", "w", "s1"}, h(1)},
		}},
		{"the newest signatures are kept past the limit", []coredogv1.CoreDump{
			dumpAt("p", "ns", "w", "old", "", "", h(1)),
			dumpAt("p", "ns", "w", "new", "", "", h(5)),
			dumpAt("p", "ns", "w", "mid", "", "", h(3)),
		}, 2, []signatureSeen{
			{[4]string{"ns", "Deployment", "w", "new"}, h(5)},
			{[4]string{"ns", "Deployment", "w", "mid"}, h(3)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := firstSeen(tc.dumps, tc.limit); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("firstSeen = %v, want %v", got, tc.want)
			}
		})
	}
}

// A workload that crashes with ever new signatures grows the crash counter
// to maxCrashSeries label sets and no further.
func TestCrashSeriesBounded(t *testing.T) {
	m := &Metrics{
		dumps:       prometheus.NewCounterVec(prometheus.CounterOpts{Name: "d"}, []string{"namespace", "signal", "phase"}),
		crashes:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c"}, []string{"namespace", "workload_type", "workload", "signature", "phase", "reason"}),
		crashSeries: map[[5]string]struct{}{},
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range maxCrashSeries + 500 {
		cd := dumpAt("p", "ns", "w", fmt.Sprintf("sig-%d", i), coredogv1.PhaseUploaded, coredogv1.ReasonUploaded, t0)
		m.finished(&cd)
	}
	if n := testutil.CollectAndCount(m.crashes); n != maxCrashSeries+1 {
		t.Errorf("%d crash series, want %d (the cap and one %q)", n, maxCrashSeries+1, otherSignature)
	}
	if v := testutil.ToFloat64(m.crashes.WithLabelValues("ns", "Deployment", "w", otherSignature, "Uploaded", "Uploaded")); v != 500 {
		t.Errorf("%q counted %v crashes, want 500", otherSignature, v)
	}
}
