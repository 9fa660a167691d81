package notify

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// DefaultOn are the phases a sink notifies when its spec names none (the
// API server defaults them too).
var DefaultOn = []coredogv1.NotificationTrigger{coredogv1.NotifyOnUploaded, coredogv1.NotifyOnFailed}

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
		on = DefaultOn
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
	for _, s := range strings.Split(v, ",") {
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

// Peer is a CoreDump sharing a rate-limit budget (policy, workload and
// signature), as the once-per-window rule sees it.
type Peer struct {
	Name    string
	Created time.Time
	// Throttled: Skipped with reason Throttled.
	Throttled bool
	// Decided is false while the dump may still be throttled (Pending).
	Decided bool
}

// PeerOf describes a CoreDump for ThrottleWindow.
func PeerOf(cd *coredogv1.CoreDump) Peer {
	p := cd.Status.Phase
	return Peer{
		Name: cd.Name, Created: cd.CreationTimestamp.Time,
		Throttled: p == coredogv1.PhaseSkipped && cd.Status.Reason == coredogv1.ReasonThrottled,
		Decided:   p != "" && p != coredogv1.PhasePending,
	}
}

// Window is one rate-limit window of throttled dumps: the dump that opened
// it (and carries its notification) and how many throttled dumps fall in it.
type Window struct {
	Leader Peer
	Count  int
	// Until is when the window closes: Leader.Created + the rate-limit window.
	Until time.Time
}

// ThrottleWindow finds the window throttled dump d belongs to among its
// peers (which may include d). Ordered by creation time, then name, the
// first throttled dump opens a window of length window; a throttled dump
// created within it belongs to it, the next one after it opens a new one.
// ready is false while a peer ordered before d is undecided, since it may
// yet be throttled and change the answer. Like the rate limit, the result
// depends only on the CoreDumps, so every reconcile, on any leader, agrees.
func ThrottleWindow(d Peer, peers []Peer, window time.Duration) (w Window, ready bool) {
	all := make([]Peer, 0, len(peers)+1)
	seen := false
	for _, p := range peers {
		if p.Name == d.Name {
			seen = true
			p = d
		}
		all = append(all, p)
	}
	if !seen {
		all = append(all, d)
	}
	sort.Slice(all, func(i, j int) bool { return before(all[i], all[j]) })
	var leader *Peer
	found := false
	for i := range all {
		p := all[i]
		if !found && before(p, d) && !p.Decided {
			return Window{}, false
		}
		if !p.Throttled {
			continue
		}
		if leader == nil || p.Created.Sub(leader.Created) >= window {
			if found {
				break // the next window
			}
			leader = &all[i]
			w = Window{Leader: p, Until: p.Created.Add(window)}
		}
		w.Count++
		if p.Name == d.Name {
			found = true
		}
	}
	return w, found
}

// Undecided reports whether a peer created before until may still be
// throttled, so that a window's count is not final yet.
func Undecided(peers []Peer, until time.Time) bool {
	for _, p := range peers {
		if !p.Decided && p.Created.Before(until) {
			return true
		}
	}
	return false
}

func before(a, b Peer) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.Before(b.Created)
	}
	return a.Name < b.Name
}
