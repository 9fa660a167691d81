package cli

import (
	"bytes"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
)

func testLease(policy, node string, renewed time.Duration, mode, corePattern, local string) coordinationv1.Lease {
	return coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Name: agentlease.Name(policy, node), Namespace: "coredog-system",
			Labels: map[string]string{coredogv1.LabelPolicy: coredogv1.LabelValue(policy), coredogv1.LabelNode: coredogv1.LabelValue(node)},
			Annotations: map[string]string{
				agentlease.AnnotationEndpoint: "https://10.0.0.1:9443", agentlease.AnnotationMode: mode,
				agentlease.AnnotationCorePattern: corePattern, agentlease.AnnotationLocalBytes: local,
			},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: new(node), LeaseDurationSeconds: new(int32(30)), RenewTime: new(metav1.NewMicroTime(now.Add(-renewed)))},
	}
}

func TestRenderStatus(t *testing.T) {
	ready := coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: "s3://cores/prod?region=eu-west-1"}},
		Status: coredogv1.CoreDumpPolicyStatus{DesiredAgents: 2, ReadyAgents: 2, Dumps: coredogv1.DumpCounters{Captured: 12, Uploaded: 10, Skipped: 1, Failed: 1, Counted: 40},
			Conditions: []metav1.Condition{{Type: coredogv1.ConditionReady, Status: metav1.ConditionTrue, Reason: coredogv1.ReasonAgentsReady}}}}
	longName := "a-policy-with-a-name-that-is-quite-long-x"
	notReady := coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: longName},
		Spec: coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: "file:///srv/cores"}},
		Status: coredogv1.CoreDumpPolicyStatus{DesiredAgents: 3, ReadyAgents: 1,
			Conditions: []metav1.Condition{{Type: coredogv1.ConditionReady, Status: metav1.ConditionFalse, Reason: coredogv1.ReasonAgentsNotReady, Message: "1 of 3 agents ready"}}}}
	conflict := coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec: coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: "gs://x"}},
		Status: coredogv1.CoreDumpPolicyStatus{Conditions: []metav1.Condition{
			{Type: coredogv1.ConditionReady, Status: metav1.ConditionFalse, Reason: coredogv1.ReasonOverlap},
			{Type: coredogv1.ConditionConflict, Status: metav1.ConditionTrue, Reason: coredogv1.ReasonOverlap, Message: "policy default owns /var/lib/coredog/cores"}}}}
	fresh := coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}, Spec: coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: "gs://y"}}}

	r := StatusReport{
		Policies: []coredogv1.CoreDumpPolicy{ready, notReady, conflict, fresh},
		Leases: []coordinationv1.Lease{
			testLease("default", "node-2", 5*time.Second, "watch", "Observe", "0"),
			testLease("default", "node-1", 2*time.Minute, "poll", "Manage", "1610612736"),
			testLease(longName, "node-1", 3*time.Second, "watch", "Observe", "43008"),
		},
		Dumps: []coredogv1.CoreDump{
			testDump("core-p", 30*time.Second, withPhase(coredogv1.PhasePending, "", "")),
			testDump("core-f", time.Hour, withPhase(coredogv1.PhaseFailed, "", "writing s3://cores/x: AccessDenied: the controller's role may not write")),
		},
	}
	var b bytes.Buffer
	RenderStatus(&b, r, now)
	want := lines(
		"Policies:",
		"  NAME                                        READY     AGENTS   STORAGE                            CAPTURED   UPLOADED   SKIPPED   FAILED   COUNTED   MESSAGE",
		"  default                                     True      2/2      s3://cores/prod?region=eu-west-1   12         10         1         1        40        -",
		"  a-policy-with-a-name-that-is-quite-long-x   False     1/3      file:///srv/cores                  0          0          0         0        0         AgentsNotReady: 1 of 3 agents ready",
		"  late                                        False     0/0      gs://x                             0          0          0         0        0         Conflict: policy default owns /var/lib/coredog/cores",
		"  fresh                                       Unknown   0/0      gs://y                             0          0          0         0        0         not reconciled yet",
		"",
		"Agents:",
		"  POLICY                                      NODE     ENDPOINT                HEARTBEAT        MODE    CORE_PATTERN   LOCAL",
		"  a-policy-with-a-name-that-is-quite-long-x   node-1   https://10.0.0.1:9443   3s ago           watch   Observe        42Ki",
		"  default                                     node-1   https://10.0.0.1:9443   2m ago (stale)   poll    Manage         1.5Gi",
		"  default                                     node-2   https://10.0.0.1:9443   5s ago           watch   Observe        0",
		"",
		"Dumps waiting or failed:",
		"  NAME     POD            NODE     PHASE     AGE   ATTEMPTS   MESSAGE",
		"  core-p   team-a/web-0   node-1   Pending   30s   1          -",
		"  core-f   team-a/web-0   node-1   Failed    60m   1          writing s3://cores/x: AccessDenied: the controller's role may not write",
	)
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}

	b.Reset()
	RenderStatus(&b, StatusReport{PoliciesError: "listing CoreDumpPolicies: forbidden", LeasesError: "listing agent Leases: forbidden"}, now)
	want = lines(
		"Policies:",
		"  <listing CoreDumpPolicies: forbidden>",
		"",
		"Agents:",
		"  <listing agent Leases: forbidden>",
		"",
		"Dumps waiting or failed:",
		"  <none>",
	)
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
