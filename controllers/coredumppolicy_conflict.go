package controllers

import (
	"path"
	"sort"
	"strings"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Conflicts decides which policies may run agents. Policies are taken oldest
// first (creation time, then name); a policy loses when it overlaps an older
// policy that itself runs agents. The result maps each losing policy to the
// policy it lost to.
//
// Overlap is judged from the specs alone, not from the nodes that exist now:
// two nodeSelectors overlap unless they require different values for the
// same label; on such nodes two policies collide when one host path contains
// the other (agents watch recursively) or when both set kernel.core_pattern
// (Manage or Pipe), a single setting per node. Judging from live nodes would let two agents start on
// a node that is labelled later, before the controller noticed; the
// structural rule can report a conflict that no node exhibits today, which an
// admin fixes by making the selectors disjoint.
func Conflicts(policies []coredogv1.CoreDumpPolicy) map[string]string {
	live := make([]*coredogv1.CoreDumpPolicy, 0, len(policies))
	for i := range policies {
		if policies[i].DeletionTimestamp.IsZero() {
			live = append(live, &policies[i])
		}
	}
	sort.Slice(live, func(i, j int) bool {
		ti, tj := live[i].CreationTimestamp, live[j].CreationTimestamp
		if !ti.Equal(&tj) {
			return ti.Before(&tj)
		}
		return live[i].Name < live[j].Name
	})
	lost := map[string]string{}
	var winners []*coredogv1.CoreDumpPolicy
	for _, p := range live {
		for _, w := range winners {
			if overlap(p, w) {
				lost[p.Name] = w.Name
				break
			}
		}
		if _, ok := lost[p.Name]; !ok {
			winners = append(winners, p)
		}
	}
	return lost
}

func overlap(a, b *coredogv1.CoreDumpPolicy) bool {
	if !selectorsIntersect(a.Spec.NodeSelector, b.Spec.NodeSelector) {
		return false
	}
	// kernel.core_pattern is one setting per node: two policies that both
	// write it would overwrite each other, whatever their directories.
	return pathsNested(hostPath(a), hostPath(b)) || (setsCorePattern(a) && setsCorePattern(b))
}

func setsCorePattern(p *coredogv1.CoreDumpPolicy) bool {
	return p.Spec.CorePattern == coredogv1.CorePatternManage || p.Spec.CorePattern == coredogv1.CorePatternPipe
}

func selectorsIntersect(a, b map[string]string) bool {
	for k, va := range a {
		if vb, ok := b[k]; ok && va != vb {
			return false
		}
	}
	return true
}

func pathsNested(a, b string) bool {
	a, b = path.Clean(a), path.Clean(b)
	return a == b || strings.HasPrefix(a, b+"/") || strings.HasPrefix(b, a+"/")
}

func hostPath(p *coredogv1.CoreDumpPolicy) string {
	if p.Spec.HostPath == "" {
		return coredogv1.DefaultHostPath
	}
	return p.Spec.HostPath
}
