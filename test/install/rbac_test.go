package install

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// The exact RBAC CoreDog installs, as group/resource: verbs. A change here is
// a change of the operator's privileges and must be reviewed as one: the
// same rules must hold in config/rbac (role.yaml generated from the
// +kubebuilder:rbac markers, the rest hand-written) and in the chart.
var (
	// wantManagerClusterRules: read policies and what dumps are attributed to
	// (pods, their namespaces and owners) and the crashed container's log
	// (stored next to its dump), write policy status and Events.
	wantManagerClusterRules = expandRules(
		"authentication.k8s.io/tokenreviews: create",
		"authorization.k8s.io/subjectaccessreviews: create",
		"core/events: create patch",
		"events.k8s.io/events: create patch",
		"core/pods: get list watch",
		"core/pods/log: get",
		"core/namespaces: get list watch",
		"apps/replicasets: get",
		"batch/jobs: get",
		"coredog.io/coredumppolicies: get list watch",
		"coredog.io/coredumppolicies/status: get update patch",
		"coredog.io/coredumppolicies/finalizers: update",
	)
	// wantManagerNamespacedRules, in the controller's namespace only: agent
	// DaemonSets and TLS Secrets (delete: the agents' former shared serving
	// key), Leases (leader election, an agent's endpoint read at upload, and
	// the serving certificate written into an agent's Lease), CoreDumps.
	wantManagerNamespacedRules = expandRules(
		"apps/daemonsets: get list watch create update patch delete",
		"core/secrets: get list watch create update patch delete",
		"coordination.k8s.io/leases: get list watch create update patch",
		"coredog.io/coredumps: get list watch create update patch delete",
		"coredog.io/coredumps/status: get update patch",
		"coredog.io/coredumps/finalizers: update",
	)
	// wantAgentNamespacedRules: create and watch CoreDumps, patch their
	// series, keep a Lease.
	// Nothing cluster-wide, no Secrets.
	wantAgentNamespacedRules = expandRules(
		"coredog.io/coredumps: get list watch create patch",
		"coordination.k8s.io/leases: get create update",
	)
	// wantAgentClusterRules: the agent's one cluster-wide right, checking who
	// scrapes its metrics endpoint (both reviews persist nothing).
	wantAgentClusterRules = expandRules(
		"authentication.k8s.io/tokenreviews: create",
		"authorization.k8s.io/subjectaccessreviews: create",
	)
	// wantMetricsReaderRules: reading the metrics endpoints, for scrapers.
	wantMetricsReaderRules = []string{"nonResourceURLs=[/metrics] verbs=[get]"}
)

// expandRules turns "group/resource: verb verb" lines ("core" is the "" group)
// into one "group/resource verb" entry per verb.
func expandRules(lines ...string) []string {
	var out []string
	for _, l := range lines {
		gr, verbs, _ := strings.Cut(l, ": ")
		g, r, _ := strings.Cut(gr, "/")
		if g == "core" {
			g = ""
		}
		for v := range strings.FieldsSeq(verbs) {
			out = append(out, ruleEntry(g, r, v))
		}
	}
	return out
}

func ruleEntry(group, resource, verb string) string {
	if group == "" {
		group = "core"
	}
	return group + "/" + resource + " " + verb
}

// flattenRules expands PolicyRules the same way; resourceNames,
// nonResourceURLs and wildcards are reported as entries of their own so that
// they always show up as unexpected.
func flattenRules(rules []rbacv1.PolicyRule) []string {
	var out []string
	for _, r := range rules {
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					e := ruleEntry(g, res, v)
					if len(r.ResourceNames) > 0 {
						e += fmt.Sprintf(" resourceNames=%v", r.ResourceNames)
					}
					out = append(out, e)
				}
			}
		}
		if len(r.NonResourceURLs) > 0 {
			out = append(out, fmt.Sprintf("nonResourceURLs=%v verbs=%v", r.NonResourceURLs, r.Verbs))
		}
		if len(r.APIGroups) == 0 && len(r.NonResourceURLs) == 0 {
			out = append(out, fmt.Sprintf("rule without apiGroups: %+v", r))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// checkRBAC asserts the exact roles and bindings among objs: the manager's
// ClusterRole and Role, the agent's Role and its metrics-auth ClusterRole,
// each bound to its own ServiceAccount only, the metrics-reader ClusterRole
// (bound to scraper when that is not empty), and nothing else.
func checkRBAC(t *testing.T, objs []manifest, namespace, manager, agent, scraper string) {
	t.Helper()
	prefix := strings.TrimSuffix(manager, "-manager")
	reader, agentAuth := prefix+"-metrics-reader", agent+"-metrics-auth"
	var roles, bindings []string
	for _, m := range objs {
		switch o := m.Typed.(type) {
		case *rbacv1.ClusterRole:
			roles = append(roles, "ClusterRole "+o.Name)
			switch o.Name {
			case manager:
				assertSameSet(t, fmt.Sprintf("rules of ClusterRole %s (%s)", o.Name, m.Source), wantManagerClusterRules, flattenRules(o.Rules))
			case agentAuth:
				assertSameSet(t, fmt.Sprintf("rules of ClusterRole %s (%s)", o.Name, m.Source), wantAgentClusterRules, flattenRules(o.Rules))
			case reader:
				assertSameSet(t, fmt.Sprintf("rules of ClusterRole %s (%s)", o.Name, m.Source), wantMetricsReaderRules, flattenRules(o.Rules))
			}
			if o.AggregationRule != nil {
				t.Errorf("ClusterRole %s aggregates other roles", o.Name)
			}
		case *rbacv1.Role:
			roles = append(roles, "Role "+objectKey(o.Namespace, o.Name))
			switch o.Name {
			case manager:
				assertSameSet(t, fmt.Sprintf("rules of Role %s (%s)", o.Name, m.Source), wantManagerNamespacedRules, flattenRules(o.Rules))
			case agent:
				assertSameSet(t, fmt.Sprintf("rules of Role %s (%s)", o.Name, m.Source), wantAgentNamespacedRules, flattenRules(o.Rules))
			}
		case *rbacv1.ClusterRoleBinding:
			bindings = append(bindings, describeBinding("ClusterRoleBinding", "", o.Name, o.RoleRef, o.Subjects))
		case *rbacv1.RoleBinding:
			bindings = append(bindings, describeBinding("RoleBinding", o.Namespace, o.Name, o.RoleRef, o.Subjects))
		}
	}
	assertSameSet(t, "roles", []string{
		"ClusterRole " + manager,
		"ClusterRole " + agentAuth,
		"ClusterRole " + reader,
		"Role " + objectKey(namespace, manager),
		"Role " + objectKey(namespace, agent),
	}, roles)
	sa := func(name string) string { return "ServiceAccount " + objectKey(namespace, name) }
	wantBindings := []string{
		fmt.Sprintf("ClusterRoleBinding %s: ClusterRole %s -> [%s]", manager, manager, sa(manager)),
		fmt.Sprintf("ClusterRoleBinding %s: ClusterRole %s -> [%s]", agentAuth, agentAuth, sa(agent)),
		fmt.Sprintf("RoleBinding %s: Role %s -> [%s]", objectKey(namespace, manager), manager, sa(manager)),
		fmt.Sprintf("RoleBinding %s: Role %s -> [%s]", objectKey(namespace, agent), agent, sa(agent)),
	}
	if scraper != "" {
		wantBindings = append(wantBindings, fmt.Sprintf("ClusterRoleBinding %s: ClusterRole %s -> [%s]", scraper, reader, sa(scraper)))
	}
	assertSameSet(t, "bindings", wantBindings, bindings)
}

func describeBinding(kind, namespace, name string, ref rbacv1.RoleRef, subjects []rbacv1.Subject) string {
	var subs []string
	for _, s := range subjects {
		subs = append(subs, s.Kind+" "+objectKey(s.Namespace, s.Name))
	}
	if ref.APIGroup != rbacv1.GroupName {
		subs = append(subs, "roleRef.apiGroup="+ref.APIGroup)
	}
	return fmt.Sprintf("%s %s: %s %s -> %v", kind, objectKey(namespace, name), ref.Kind, ref.Name, subs)
}

// configRBAC reads every file of config/rbac, checking that the
// kustomization lists each one.
func configRBAC(t *testing.T) []manifest {
	t.Helper()
	dir := repoPath("config", "rbac")
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("config/rbac/kustomization.yaml: %v", err)
	}
	var objs []manifest
	var names []string
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		names = append(names, filepath.Base(f))
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, parseManifests(t, "config/rbac/"+filepath.Base(f), data)...)
	}
	assertSameSet(t, "files in config/rbac and resources of its kustomization", names, k.Resources)
	return objs
}

// TestConfigRBAC pins the rules of config/rbac. While the generated
// role.yaml lacks rules that the controllers' markers ask for, this fails
// and names them: run `make manifests`.
func TestConfigRBAC(t *testing.T) {
	objs := configRBAC(t)
	checkRBAC(t, objs, defaultNamespace, managerName, agentName, "")
	sas := map[string]bool{}
	for _, m := range objs {
		if m.Obj.GetKind() == "ServiceAccount" {
			sas[objectKey(m.Obj.GetNamespace(), m.Obj.GetName())] = true
		}
	}
	for _, want := range []string{managerName, agentName} {
		if !sas[objectKey(defaultNamespace, want)] {
			t.Errorf("config/rbac has no ServiceAccount %s/%s", defaultNamespace, want)
		}
	}
}

func TestChartRBAC(t *testing.T) {
	for name, tc := range map[string]struct{ overrides, scraper string }{
		"default values": {"", ""},
		"all options on": {allOptionsOn, scraperName},
	} {
		t.Run(name, func(t *testing.T) {
			r := mustRender(t, chartRelease, "ops", values(t, tc.overrides))
			checkRBAC(t, r.Objects, "ops", managerName, agentName, tc.scraper)
		})
	}
}
