package notify

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// TriggerOf is the trigger a CoreDump in its final phase fires; false for
// dumps that never notify: not final yet, or left out by the policy's
// selectors (NotSelected), which promise to ignore those pods.
func TriggerOf(cd *coredogv1.CoreDump) (coredogv1.NotificationTrigger, bool) {
	switch cd.Status.Phase {
	case coredogv1.PhaseUploaded:
		return coredogv1.NotifyOnUploaded, true
	case coredogv1.PhaseFailed:
		return coredogv1.NotifyOnFailed, true
	case coredogv1.PhaseSkipped:
		return coredogv1.NotifyOnSkipped, cd.Status.Reason != coredogv1.ReasonNotSelected
	}
	return "", false
}

// Matches reports whether sink s wants to hear about cd. nsLabels are the
// labels of the crashed pod's namespace (nil when unknown). An invalid
// namespaceSelector matches nothing, and says why.
func Matches(s *coredogv1.NotificationSink, cd *coredogv1.CoreDump, nsLabels map[string]string) (bool, error) {
	trigger, ok := TriggerOf(cd)
	if !ok {
		return false, nil
	}
	on := s.On
	if len(on) == 0 {
		on = coredogv1.DefaultNotifyOn()
	}
	if !slices.Contains(on, trigger) {
		return false, nil
	}
	if len(s.Signals) > 0 && !slices.Contains(s.Signals, coredogv1.SignalName(cd.Spec.Process.SignalName)) {
		return false, nil
	}
	if s.NamespaceSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(s.NamespaceSelector)
		if err != nil {
			return false, fmt.Errorf("sink %s: invalid namespaceSelector: %w", s.Name, err)
		}
		ref := cd.Status.Pod
		if ref == nil || ref.Namespace == "" || nsLabels == nil {
			return false, nil
		}
		if !sel.Matches(labels.Set(nsLabels)) {
			return false, nil
		}
	}
	return true, nil
}

// splitList reads a comma-separated annotation value.
func splitList(v string) []string {
	var out []string
	for s := range strings.SplitSeq(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// joinList writes a sorted, duplicate-free comma-separated value.
func joinList(vs []string) string {
	vs = slices.DeleteFunc(slices.Clone(vs), func(s string) bool { return s == "" })
	sort.Strings(vs)
	return strings.Join(slices.Compact(vs), ",")
}
