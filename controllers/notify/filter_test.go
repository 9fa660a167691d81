package notify

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func dumpIn(phase coredogv1.Phase, reason, signal, ns string) *coredogv1.CoreDump {
	cd := &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: "d"},
		Spec:       coredogv1.CoreDumpSpec{Process: coredogv1.ProcessInfo{SignalName: signal}},
		Status:     coredogv1.CoreDumpStatus{Phase: phase, Reason: reason},
	}
	if ns != "" {
		cd.Status.Pod = &coredogv1.PodReference{Namespace: ns, Name: "p"}
	}
	return cd
}

func TestMatches(t *testing.T) {
	payments := map[string]string{"team": "payments"}
	sel := &metav1.LabelSelector{MatchLabels: payments}
	cases := []struct {
		name     string
		sink     coredogv1.NotificationSink
		dump     *coredogv1.CoreDump
		nsLabels map[string]string
		want     bool
	}{
		{"default on: uploaded", coredogv1.NotificationSink{}, dumpIn(coredogv1.PhaseUploaded, "Uploaded", "SIGSEGV", "a"), nil, true},
		{"default on: failed", coredogv1.NotificationSink{}, dumpIn(coredogv1.PhaseFailed, "UploadFailed", "SIGSEGV", "a"), nil, true},
		{"default on: not skipped", coredogv1.NotificationSink{}, dumpIn(coredogv1.PhaseSkipped, "TooLarge", "SIGSEGV", "a"), nil, false},
		{"on skipped", coredogv1.NotificationSink{On: []coredogv1.NotificationTrigger{"Skipped"}}, dumpIn(coredogv1.PhaseSkipped, "Throttled", "SIGSEGV", "a"), nil, true},
		{"never for NotSelected", coredogv1.NotificationSink{On: []coredogv1.NotificationTrigger{"Skipped"}}, dumpIn(coredogv1.PhaseSkipped, "NotSelected", "SIGSEGV", "a"), nil, false},
		{"never before the final phase", coredogv1.NotificationSink{On: []coredogv1.NotificationTrigger{"Uploaded"}}, dumpIn(coredogv1.PhaseUploading, "", "SIGSEGV", "a"), nil, false},
		{"only failed", coredogv1.NotificationSink{On: []coredogv1.NotificationTrigger{"Failed"}}, dumpIn(coredogv1.PhaseUploaded, "Uploaded", "SIGSEGV", "a"), nil, false},
		{"signal listed", coredogv1.NotificationSink{Signals: []coredogv1.SignalName{"SIGABRT", "SIGSEGV"}}, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", "a"), nil, true},
		{"signal not listed", coredogv1.NotificationSink{Signals: []coredogv1.SignalName{"SIGABRT"}}, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", "a"), nil, false},
		{"signal unknown", coredogv1.NotificationSink{Signals: []coredogv1.SignalName{"SIGABRT"}}, dumpIn(coredogv1.PhaseUploaded, "", "", "a"), nil, false},
		{"namespace selected", coredogv1.NotificationSink{NamespaceSelector: sel}, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", "pay"), payments, true},
		{"namespace not selected", coredogv1.NotificationSink{NamespaceSelector: sel}, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", "web"), map[string]string{"team": "web"}, false},
		{"pod unknown with a selector", coredogv1.NotificationSink{NamespaceSelector: sel}, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", ""), nil, false},
		{"empty selector, unlabelled namespace", coredogv1.NotificationSink{NamespaceSelector: &metav1.LabelSelector{}}, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", "x"), map[string]string{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Matches(&tc.sink, tc.dump, tc.nsLabels)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
	bad := coredogv1.NotificationSink{Name: "bad", NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Sometimes"}}}}
	if ok, err := Matches(&bad, dumpIn(coredogv1.PhaseUploaded, "", "SIGSEGV", "a"), map[string]string{}); ok || err == nil {
		t.Errorf("an invalid selector matched (%v, %v)", ok, err)
	}
}

func TestLists(t *testing.T) {
	if got := joinList([]string{"b", "a", "b", ""}); got != "a,b" {
		t.Errorf("joinList = %q", got)
	}
	if got := splitList(" a, ,b,"); len(got) != 2 || got[0] != "a" || got[1] != "b" {
		t.Errorf("splitList = %q", got)
	}
}
