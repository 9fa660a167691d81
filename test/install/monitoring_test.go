package install

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
)

// checkMonitoring asserts the ServiceMonitor, PodMonitor, PrometheusRule and
// dashboard of a release with all of them on (allOptionsOn).
func checkMonitoring(t *testing.T, objs []manifest, ns string) {
	t.Helper()
	const tokenSecret = "coredog-metrics-scraper-token"
	secret := find[*corev1.Secret](t, objs, tokenSecret)
	if secret.Type != corev1.SecretTypeServiceAccountToken || secret.Annotations[corev1.ServiceAccountNameKey] != scraperName {
		t.Errorf("Secret %s: type %s, annotations %v; want a token of ServiceAccount %s", tokenSecret, secret.Type, secret.Annotations, scraperName)
	}
	wantAuth := func(what string, auth *monitoringv1.SafeAuthorization, scheme *monitoringv1.Scheme) {
		if auth == nil || auth.Credentials == nil || auth.Credentials.Name != tokenSecret || auth.Credentials.Key != "token" {
			t.Errorf("%s scrapes without the scraper's token: %+v", what, auth)
		}
		if scheme == nil || scheme.String() != "https" {
			t.Errorf("%s scheme %v, want https (the endpoints serve nothing else)", what, scheme)
		}
	}

	sm := find[*monitoringv1.ServiceMonitor](t, objs, managerName)
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack serviceMonitor.labels", sm.Labels)
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints %+v", sm.Spec.Endpoints)
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Port != "metrics" || ep.Interval != "15s" || ep.ScrapeTimeout != "5s" || !ep.HonorLabels {
		t.Errorf("ServiceMonitor endpoint %+v: want port metrics, 15s, 5s, honorLabels (coredog_* series name the crashed pod's namespace)", ep)
	}
	wantAuth("ServiceMonitor", ep.Authorization, ep.Scheme)
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{ns}) {
		t.Errorf("ServiceMonitor namespaceSelector %v, want the release namespace", sm.Spec.NamespaceSelector.MatchNames)
	}
	svc := find[*corev1.Service](t, objs, metricsName)
	if !subset(sm.Spec.Selector.MatchLabels, svc.Labels) {
		t.Errorf("ServiceMonitor selector %v does not select the metrics Service (labels %v)", sm.Spec.Selector.MatchLabels, svc.Labels)
	}

	// The PodMonitor selects the pods the manager renders for any policy,
	// on their metrics port, and names them by node and policy.
	pm := find[*monitoringv1.PodMonitor](t, objs, agentName)
	ds := agentset.RenderDaemonSet(&v1alpha1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, agentset.Options{Namespace: ns, DefaultImage: "img"})
	sel, err := metav1.LabelSelectorAsSelector(&pm.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("PodMonitor selector %v does not select the agent pods (labels %v): %v", pm.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	if !slices.Equal(pm.Spec.NamespaceSelector.MatchNames, []string{ns}) {
		t.Errorf("PodMonitor namespaceSelector %v, want the release namespace", pm.Spec.NamespaceSelector.MatchNames)
	}
	if len(pm.Spec.PodMetricsEndpoints) != 1 {
		t.Fatalf("PodMonitor endpoints %+v", pm.Spec.PodMetricsEndpoints)
	}
	pep := pm.Spec.PodMetricsEndpoints[0]
	var portName string
	for _, p := range ds.Spec.Template.Spec.Containers[0].Ports {
		if p.ContainerPort == agentset.MetricsPort {
			portName = p.Name
		}
	}
	if pep.Port == nil || *pep.Port != portName || pep.Interval != "20s" || pep.ScrapeTimeout != "5s" {
		t.Errorf("PodMonitor endpoint %+v: want port %q (the agent's metrics port), 20s, 5s", pep, portName)
	}
	wantAuth("PodMonitor", pep.Authorization, pep.Scheme)
	relabel := map[string]string{}
	for _, r := range pep.RelabelConfigs {
		if r.TargetLabel != "" && len(r.SourceLabels) == 1 {
			relabel[r.TargetLabel] = string(r.SourceLabels[0])
		}
	}
	want := map[string]string{"node": "__meta_kubernetes_pod_node_name", "policy": "__meta_kubernetes_pod_label_coredog_io_policy"}
	if !reflect.DeepEqual(relabel, want) {
		t.Errorf("PodMonitor relabelings %v, want %v", relabel, want)
	}
	if ds.Spec.Template.Labels[v1alpha1.LabelPolicy] != "team-a" {
		t.Errorf("agent pods lack %s, which the policy relabeling reads", v1alpha1.LabelPolicy)
	}

	// The PrometheusRule ships files/prometheus-rules.yaml as it is: what
	// promtool checks (test/alerts) is what Prometheus loads.
	pr := find[*monitoringv1.PrometheusRule](t, objs, "coredog")
	if pr.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("PrometheusRule labels %v lack prometheusRule.labels", pr.Labels)
	}
	raw, err := os.ReadFile(filepath.Join(chartDir(), "files", "prometheus-rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var file monitoringv1.PrometheusRuleSpec
	if err := yaml.UnmarshalStrict(raw, &file); err != nil {
		t.Fatalf("files/prometheus-rules.yaml: %v", err)
	}
	if !reflect.DeepEqual(pr.Spec, file) || len(file.Groups) == 0 || len(file.Groups[0].Rules) < 10 {
		t.Errorf("the PrometheusRule's spec is not files/prometheus-rules.yaml (%d groups)", len(file.Groups))
	}

	cm := find[*corev1.ConfigMap](t, objs, "coredog-dashboard")
	if cm.Labels["grafana_dashboard"] != "1" || cm.Annotations["grafana_folder"] != "Platform" {
		t.Errorf("dashboard ConfigMap labels %v, annotations %v", cm.Labels, cm.Annotations)
	}
	dash, err := os.ReadFile(filepath.Join(chartDir(), "files", "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["coredog.json"] != string(dash) {
		t.Error("the dashboard ConfigMap does not hold files/dashboard.json as it is")
	}
	var d struct {
		UID    string `json:"uid"`
		Panels []any  `json:"panels"`
	}
	if err := json.Unmarshal(dash, &d); err != nil || d.UID == "" || len(d.Panels) == 0 {
		t.Errorf("files/dashboard.json is not a dashboard (%v)", err)
	}
}

// checkAvoidAgentNodes asserts the manager's anti-affinity to the pods of
// privileged agents, rendered by the manager itself for a Pipe policy, and
// none to those of an Observe policy.
func checkAvoidAgentNodes(t *testing.T, dep *appsv1.Deployment, mode string) {
	t.Helper()
	render := func(m v1alpha1.CorePatternMode) labels.Set {
		p := &v1alpha1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		p.Spec.CorePattern = m
		return labels.Set(agentset.RenderDaemonSet(p, agentset.Options{Namespace: dep.Namespace, DefaultImage: "img"}).Spec.Template.Labels)
	}
	var terms []corev1.PodAffinityTerm
	if aff := dep.Spec.Template.Spec.Affinity; aff != nil && aff.PodAntiAffinity != nil {
		terms = append(terms, aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution...)
		if mode != "Required" {
			terms = nil
			for _, w := range aff.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
				if w.Weight == 100 && w.PodAffinityTerm.LabelSelector.MatchLabels[agentset.LabelPrivileged] != "" {
					terms = append(terms, w.PodAffinityTerm)
				}
			}
		}
	}
	var avoided, observeAvoided bool
	for _, term := range terms {
		sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
		if err != nil {
			t.Fatal(err)
		}
		if term.TopologyKey != corev1.LabelHostname {
			t.Errorf("anti-affinity term on %q, want %s (per node)", term.TopologyKey, corev1.LabelHostname)
		}
		avoided = avoided || sel.Matches(render(v1alpha1.CorePatternPipe))
		observeAvoided = observeAvoided || sel.Matches(render(v1alpha1.CorePatternObserve))
	}
	if avoided != (mode != "") || observeAvoided {
		t.Errorf("avoidAgentNodes %q: avoids Pipe agents %v, Observe agents %v", mode, avoided, observeAvoided)
	}
}

func TestChartAvoidAgentNodes(t *testing.T) {
	for _, mode := range []string{"", "Preferred", "Required"} {
		t.Run(mode, func(t *testing.T) {
			r := mustRender(t, chartRelease, defaultNamespace, values(t, "manager: {avoidAgentNodes: \""+mode+"\"}"))
			dep := find[*appsv1.Deployment](t, r.Objects, managerName)
			checkAvoidAgentNodes(t, dep, mode)
			if mode == "" && dep.Spec.Template.Spec.Affinity != nil {
				t.Errorf("affinity %+v with avoidAgentNodes off and no affinity", dep.Spec.Template.Spec.Affinity)
			}
		})
	}
}

// The monitoring objects are off by default, and each renders alone.
func TestChartMonitoringOptional(t *testing.T) {
	for _, tc := range []struct {
		values string
		want   []string
	}{
		{"", nil},
		{"metrics: {podMonitor: {enabled: true}}", []string{"PodMonitor", "ServiceAccount " + scraperName, "Secret", "ClusterRoleBinding " + scraperName}},
		{"metrics: {serviceMonitor: {enabled: true}}", []string{"ServiceMonitor", "ServiceAccount " + scraperName, "Secret", "ClusterRoleBinding " + scraperName}},
		{"metrics: {prometheusRule: {enabled: true}}", []string{"PrometheusRule"}},
		{"metrics: {dashboard: {enabled: true}}", []string{"ConfigMap"}},
	} {
		t.Run(tc.values, func(t *testing.T) {
			base := mustRender(t, chartRelease, defaultNamespace, nil)
			r := mustRender(t, chartRelease, defaultNamespace, values(t, tc.values))
			var extra []string
			for _, m := range r.Objects {
				if !slices.ContainsFunc(base.Objects, func(b manifest) bool { return b.String() == m.String() }) {
					extra = append(extra, m.Obj.GetKind())
					if k := m.Obj.GetKind(); k == "ServiceAccount" || k == "ClusterRoleBinding" {
						extra[len(extra)-1] = k + " " + m.Obj.GetName()
					}
				}
			}
			assertSameSet(t, "objects beyond the defaults", tc.want, extra)
		})
	}
}
