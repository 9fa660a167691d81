package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IsFinal reports whether the controller is done with a dump in phase p:
// Uploaded, Skipped and Failed never change again.
func (p Phase) IsFinal() bool {
	return p == PhaseUploaded || p == PhaseSkipped || p == PhaseFailed
}

// NodeMayRelease reports whether the agent may delete the node's copy of a
// dump in phase p: it is stored (Uploaded) or never will be (Skipped). A
// Failed dump stays on its node, where it can still be fetched by hand.
func (p Phase) NodeMayRelease() bool {
	return p == PhaseUploaded || p == PhaseSkipped
}

// CrashTime is when the dump happened: the time in its file name (%t), else
// when the agent saw the file, else when the CoreDump was created. A dump an
// agent found in a rescan days later still sorts, filters and is keyed by
// its crash; a missing time never yields the zero time while the object has
// a creation time.
func (cd *CoreDump) CrashTime() time.Time {
	if t := cd.Spec.Process.DumpedAt; t != nil && !t.IsZero() {
		return t.Time
	}
	if !cd.Spec.DetectedAt.IsZero() {
		return cd.Spec.DetectedAt.Time
	}
	return cd.CreationTimestamp.Time
}

// GetConditions returns the dump's status conditions.
func (cd *CoreDump) GetConditions() []metav1.Condition { return cd.Status.Conditions }

// SetConditions replaces the dump's status conditions.
func (cd *CoreDump) SetConditions(c []metav1.Condition) { cd.Status.Conditions = c }

// GetConditions returns the policy's status conditions.
func (p *CoreDumpPolicy) GetConditions() []metav1.Condition { return p.Status.Conditions }

// SetConditions replaces the policy's status conditions.
func (p *CoreDumpPolicy) SetConditions(c []metav1.Condition) { p.Status.Conditions = c }

// BudgetKey is the key of one crash budget: a policy, a workload and a crash
// signature. The manager's upload rate limit keys by the resolved workload
// (controllers/throttle); an agent's creation budget, which must decide
// before any pod is resolved, by NodeWorkload.
func BudgetKey(policy, workload, signature string) string {
	return policy + "|" + workload + "|" + signature
}

// NodeWorkload names the workload a crash belongs to from what its agent
// knows on the node: the container ID, else the process's hostname (a
// pod's name), else nothing but the node.
func (s *CoreDumpSpec) NodeWorkload() string {
	switch {
	case s.ContainerID != "":
		return "container " + s.ContainerID + " on " + s.NodeName
	case s.Process.Hostname != "":
		return "hostname " + s.Process.Hostname + " on " + s.NodeName
	default:
		return "node " + s.NodeName
	}
}
