package cli

import (
	"maps"
	"slices"
	"sort"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Group is the dumps that share one crash signature.
type Group struct {
	// Signature is the crash signature; dumps without one (not ELF cores)
	// are grouped by executable and signal, and Signature is "".
	Signature string `json:"signature"`
	// Count is how many CoreDumps the group has.
	Count int `json:"count"`
	// Crashes is Count plus the crashes counted on those CoreDumps (their
	// series) once the agents' creation budget was spent: every crash of
	// the signature, not only those with a dump.
	Crashes     int64     `json:"crashes"`
	Executable  string    `json:"executable,omitempty"`
	Signal      string    `json:"signal,omitempty"`
	CrashModule string    `json:"crashModule,omitempty"`
	CrashOffset string    `json:"crashOffset,omitempty"`
	FirstSeen   time.Time `json:"firstSeen"`
	LastSeen    time.Time `json:"lastSeen"`
	// Workloads are NAMESPACE/KIND/NAME of the workloads affected (a bare
	// pod is NAMESPACE/Pod/NAME; dumps without a pod add nothing).
	Workloads []string `json:"workloads"`
	// Unattributed counts the dumps whose pod is unknown.
	Unattributed int `json:"unattributed,omitempty"`
	// Dumps are the CoreDumps' names, oldest first.
	Dumps []string `json:"dumps"`
}

// GroupDumps folds dumps by crash signature. Groups come most frequent
// (by crashes) first, then most recent first. A series' otherCount (crashes
// of other signatures counted on a dump while the node's budget was spent)
// belongs to no group.
func GroupDumps(dumps []coredogv1.CoreDump) []Group {
	byKey := map[string]*Group{}
	workloads := map[string]map[string]bool{}
	var keys []string
	sorted := append([]coredogv1.CoreDump(nil), dumps...)
	sortDumps(sorted)
	for i := range sorted {
		cd := &sorted[i]
		key := "sig:" + cd.Spec.Signature
		if cd.Spec.Signature == "" {
			key = "exe:" + cd.Spec.Process.Executable + "\x00" + signalName(cd)
		}
		g := byKey[key]
		if g == nil {
			g = &Group{Signature: cd.Spec.Signature, Executable: cd.Spec.Process.Executable, Signal: signalName(cd)}
			if cd.Spec.ELF != nil {
				g.CrashModule, g.CrashOffset = cd.Spec.ELF.CrashModule, cd.Spec.ELF.CrashOffset
			}
			byKey[key] = g
			workloads[key] = map[string]bool{}
			keys = append(keys, key)
		}
		t := cd.CrashTime()
		if g.Count == 0 || t.Before(g.FirstSeen) {
			g.FirstSeen = t
		}
		if g.Count == 0 || t.After(g.LastSeen) {
			g.LastSeen = t
		}
		g.Count++
		g.Crashes++
		if s := cd.Series; s != nil {
			g.Crashes += s.Count
			if !s.LastObserved.IsZero() && s.LastObserved.After(g.LastSeen) {
				g.LastSeen = s.LastObserved.Time
			}
		}
		g.Dumps = append(g.Dumps, cd.Name)
		if w := affected(cd); w != "" {
			workloads[key][w] = true
		} else {
			g.Unattributed++
		}
	}
	groups := make([]Group, 0, len(keys))
	for _, k := range keys {
		g := byKey[k]
		g.Workloads = slices.Sorted(maps.Keys(workloads[k]))
		if g.Workloads == nil {
			g.Workloads = []string{} // -o json prints [], not null, for no known workload
		}
		groups = append(groups, *g)
	}
	sort.SliceStable(groups, func(i, j int) bool {
		if groups[i].Crashes != groups[j].Crashes {
			return groups[i].Crashes > groups[j].Crashes
		}
		return groups[i].LastSeen.After(groups[j].LastSeen)
	})
	return groups
}

// affected is NAMESPACE/KIND/NAME of the dump's workload, or "" when the
// pod is unknown.
func affected(cd *coredogv1.CoreDump) string {
	p := podRef(cd)
	if p.Name == "" {
		return ""
	}
	if w := workload(cd); w != "" {
		return p.Namespace + "/" + w
	}
	return p.Namespace + "/Pod/" + p.Name
}

// sortDumps orders dumps by crash time, oldest first (the newest end up
// next to the prompt), then by namespace and name.
func sortDumps(dumps []coredogv1.CoreDump) {
	sort.SliceStable(dumps, func(i, j int) bool {
		ti, tj := dumps[i].CrashTime(), dumps[j].CrashTime()
		if !ti.Equal(tj) {
			return ti.Before(tj)
		}
		if dumps[i].Namespace != dumps[j].Namespace {
			return dumps[i].Namespace < dumps[j].Namespace
		}
		return dumps[i].Name < dumps[j].Name
	})
}
