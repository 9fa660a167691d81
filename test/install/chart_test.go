package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// The chart is rendered with helm's own engine (helm.sh/helm/v3 as a library:
// the same loader, values coalescing, JSON-schema check and template
// functions as `helm install`), so no helm binary is needed.

const chartRelease = "coredog"

// testKubeVersion is the envtest control plane's version (hack/envtest.sh).
var testKubeVersion = chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}

func chartDir() string { return repoPath("charts", "coredog") }

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.LoadDir(chartDir())
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

// chartDefaultManagerArgs are the arguments values.yaml's manager block adds.
var chartDefaultManagerArgs = []string{"--max-concurrent-uploads=4", "--max-upload-attempts=15", "--upload-stall-timeout=2m"}

// allOptionsOn turns on every option of values.yaml, with values a real
// cluster would use.
const allOptionsOn = `
image:
  repository: registry.example.com/platform/coredog
  tag: v1.2.3
  pullPolicy: Always
imagePullSecrets:
- name: regcred
replicas: 3
manager:
  clusterName: "prod eu-west: #1"
  maxConcurrentUploads: 8
  maxUploadAttempts: 20
  uploadStallTimeout: 5m30s
  storageCA: minio-ca
  avoidAgentNodes: Required
resources:
  requests: {cpu: 200m, memory: 256Mi}
  limits: {cpu: "1", memory: 1Gi}
nodeSelector:
  kubernetes.io/os: linux
  node-role.kubernetes.io/infra: ""
tolerations:
- key: node-role.kubernetes.io/infra
  operator: Exists
  effect: NoSchedule
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            app.kubernetes.io/name: coredog
            app.kubernetes.io/component: manager
priorityClassName: system-cluster-critical
commonLabels:
  team: platform
podLabels:
  azure.workload.identity/use: "true"
podAnnotations:
  example.com/owner: platform
serviceAccount:
  annotations:
    eks.amazonaws.com/role-arn: arn:aws:iam::111122223333:role/coredog
metrics:
  enabled: true
  serviceMonitor:
    enabled: true
    interval: 15s
    scrapeTimeout: 5s
    labels:
      release: kube-prometheus-stack
  podMonitor:
    enabled: true
    interval: 20s
    scrapeTimeout: 5s
    labels:
      release: kube-prometheus-stack
  prometheusRule:
    enabled: true
    labels:
      release: kube-prometheus-stack
  dashboard:
    enabled: true
    labels:
      grafana_dashboard: "1"
    annotations:
      grafana_folder: Platform
defaultPolicy:
  enabled: true
  name: cluster
  hostPath: /var/lib/coredog/cores
  fileNamePattern: core.%h.%e.%P.%s.%t
  corePattern: Manage
  storage:
    url: s3://coredumps/cores?region=eu-west-1
    existingSecret: coredog-s3
  nodeSelector:
    node.kubernetes.io/instance-type: m7i.large
  tolerations:
  - operator: Exists
`

func values(t *testing.T, y string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(y))
	if err != nil {
		t.Fatalf("parsing test values: %v", err)
	}
	return v.AsMap()
}

// rendered is a chart rendered for one release.
type rendered struct {
	Objects []manifest
	Notes   string
}

// renderChart renders the chart like `helm install --dry-run`: values are
// coalesced with values.yaml and checked against values.schema.json, then
// every template is executed (strictly: a reference to a missing value fails).
func renderChart(release, namespace string, overrides map[string]any) (map[string]string, error) {
	ch, err := loader.LoadDir(chartDir())
	if err != nil {
		return nil, err
	}
	if !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, testKubeVersion.Version) {
		return nil, fmt.Errorf("chart kubeVersion %q does not admit %s", ch.Metadata.KubeVersion, testKubeVersion.Version)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = testKubeVersion
	opts := chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValues(ch, overrides, opts, caps)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, vals)
}

// mustRender renders and parses the chart, failing the test on any error.
func mustRender(t *testing.T, release, namespace string, overrides map[string]any) rendered {
	t.Helper()
	files, err := renderChart(release, namespace, overrides)
	if err != nil {
		t.Fatalf("rendering the chart: %v", err)
	}
	var r rendered
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if strings.HasSuffix(name, "/NOTES.txt") {
			r.Notes = files[name]
			continue
		}
		r.Objects = append(r.Objects, parseManifests(t, name, []byte(files[name]))...)
	}
	return r
}

func TestChartLint(t *testing.T) {
	for name, overrides := range map[string]map[string]any{
		"default values": nil,
		"all options on": values(t, allOptionsOn),
	} {
		t.Run(name, func(t *testing.T) {
			kv := testKubeVersion
			l := lint.AllWithKubeVersion(chartDir(), overrides, defaultNamespace, &kv)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %v", m)
				}
			}
		})
	}
}

// The chart's crds/ are what helm installs; they must be exactly what
// controller-gen generates, and the Makefile is not the place to copy them.
func TestChartCRDsMatchGenerated(t *testing.T) {
	gen, err := filepath.Glob(repoPath("config", "crd", "bases", "*.yaml"))
	if err != nil || len(gen) == 0 {
		t.Fatalf("no generated CRDs in config/crd/bases (%v)", err)
	}
	inChart, err := filepath.Glob(filepath.Join(chartDir(), "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const fix = "copy them: cp config/crd/bases/*.yaml charts/coredog/crds/ (after `make manifests`)"
	var genNames []string
	for _, p := range gen {
		genNames = append(genNames, filepath.Base(p))
		want, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(chartDir(), "crds", filepath.Base(p)))
		if err != nil {
			t.Errorf("charts/coredog/crds/%s is missing: %s", filepath.Base(p), fix)
			continue
		}
		if !bytes.Equal(want, got) {
			t.Errorf("charts/coredog/crds/%s differs from config/crd/bases/%[1]s: %s", filepath.Base(p), fix)
		}
	}
	for _, p := range inChart {
		if !slices.Contains(genNames, filepath.Base(p)) {
			t.Errorf("charts/coredog/crds/%s has no counterpart in config/crd/bases: delete it", filepath.Base(p))
		}
	}
}

// Every object level of values.schema.json must reject unknown keys, so that
// a misspelt value fails the install instead of being ignored.
func TestValuesSchemaIsClosed(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir(), "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	var walk func(path string, node any)
	walk = func(path string, node any) {
		switch n := node.(type) {
		case map[string]any:
			if n["type"] == "object" {
				ap, has := n["additionalProperties"]
				_, hasProps := n["properties"]
				comment, _ := n["$comment"].(string)
				switch {
				case hasProps && ap != false:
					t.Errorf("%s: an object with properties needs additionalProperties: false", path)
				case !hasProps && !has && !strings.HasPrefix(comment, "Kubernetes type"):
					t.Errorf("%s: an object needs properties with additionalProperties: false, an additionalProperties schema (a map), or a $comment starting \"Kubernetes type\" (checked by the API server)", path)
				}
			}
			for k, v := range n {
				walk(path+"/"+k, v)
			}
		case []any:
			for i, v := range n {
				walk(fmt.Sprintf("%s/%d", path, i), v)
			}
		}
	}
	walk("#", schema)
}

func TestValuesSchema(t *testing.T) {
	ch := loadChart(t)
	check := func(overrides map[string]any) error {
		caps := chartutil.DefaultCapabilities.Copy()
		_, err := chartutil.ToRenderValues(ch, overrides, chartutil.ReleaseOptions{Name: chartRelease, Namespace: defaultNamespace}, caps)
		return err
	}
	if err := check(nil); err != nil {
		t.Errorf("values.yaml does not pass values.schema.json: %v", err)
	}
	if err := check(values(t, allOptionsOn)); err != nil {
		t.Errorf("the all-options values do not pass values.schema.json: %v", err)
	}
	for _, tc := range []struct {
		name, values, wantInErr string
	}{
		{"misspelt top-level key", "replicaCount: 3", "replicaCount"},
		{"misspelt image key", "image: {tags: v1}", "tags"},
		{"misspelt resources key", "resources: {request: {cpu: 1}}", "request"},
		{"misspelt toleration key", "tolerations: [{key: a, operater: Exists}]", "operater"},
		{"misspelt affinity key", "affinity: {podAntiAfinity: {}}", "podAntiAfinity"},
		{"misspelt serviceMonitor key", "metrics: {serviceMonitor: {enable: true}}", "enable"},
		{"misspelt defaultPolicy key", "defaultPolicy: {hostpath: /cores}", "hostpath"},
		{"misspelt storage key", "defaultPolicy: {storage: {existingsecret: s3}}", "existingsecret"},
		{"misspelt service account key", "serviceAccount: {annotation: {a: b}}", "annotation"},
		{"wrong type", "replicas: two", "replicas"},
		{"no replicas", "replicas: 0", "replicas"},
		{"unknown corePattern", "defaultPolicy: {corePattern: manage}", "corePattern"},
		{"unknown pullPolicy", "image: {pullPolicy: Sometimes}", "pullPolicy"},
		{"non-string label", "podLabels: {a: 1}", "podLabels"},
		{"bad storage url", "defaultPolicy: {storage: {url: minio://b}}", "url"},
		{"misspelt manager key", "manager: {maxConcurrentUpload: 2}", "maxConcurrentUpload"},
		{"no concurrent uploads", "manager: {maxConcurrentUploads: 0}", "maxConcurrentUploads"},
		{"no upload attempts", "manager: {maxUploadAttempts: 0}", "maxUploadAttempts"},
		{"stall timeout without unit", "manager: {uploadStallTimeout: \"120\"}", "uploadStallTimeout"},
		{"storage CA not a ConfigMap name", "manager: {storageCA: \"Team_CA\"}", "storageCA"},
		{"unknown avoidAgentNodes", "manager: {avoidAgentNodes: required}", "avoidAgentNodes"},
		{"misspelt podMonitor key", "metrics: {podMonitor: {enable: true}}", "enable"},
		{"misspelt prometheusRule key", "metrics: {prometheusRule: {enabeld: true}}", "enabeld"},
		{"misspelt dashboard key", "metrics: {dashboard: {label: {a: b}}}", "label"},
		{"misspelt metrics key", "metrics: {prometheusRules: {enabled: true}}", "prometheusRules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(values(t, tc.values))
			if err == nil {
				t.Fatalf("values %q were accepted", tc.values)
			}
			if !strings.Contains(err.Error(), tc.wantInErr) {
				t.Errorf("the error does not name %q: %v", tc.wantInErr, err)
			}
		})
	}
}

func TestChartDefaultValues(t *testing.T) {
	r := mustRender(t, chartRelease, defaultNamespace, nil)
	assertSameSet(t, "objects rendered with default values", []string{
		"ServiceAccount coredog-system/coredog-manager",
		"ServiceAccount coredog-system/coredog-agent",
		"ClusterRole coredog-manager",
		"ClusterRoleBinding coredog-manager",
		"ClusterRole coredog-agent-metrics-auth",
		"ClusterRoleBinding coredog-agent-metrics-auth",
		"ClusterRole coredog-metrics-reader",
		"Role coredog-system/coredog-manager",
		"RoleBinding coredog-system/coredog-manager",
		"Role coredog-system/coredog-agent",
		"RoleBinding coredog-system/coredog-agent",
		"Deployment coredog-system/coredog-manager",
		"Service coredog-system/coredog-manager-metrics",
		"ValidatingAdmissionPolicy coredog-agent",
		"ValidatingAdmissionPolicyBinding coredog-agent",
	}, inventory(r.Objects))

	ch := loadChart(t)
	dep := find[*appsv1.Deployment](t, r.Objects, managerName)
	checkManagerDeployment(t, dep, managerDeploymentWant{
		namespace: defaultNamespace, image: "ghcr.io/coredog/coredog:" + ch.Metadata.AppVersion,
		serviceAccount: managerName, agentServiceAccount: agentName, replicas: 2, metrics: true, extraArgs: chartDefaultManagerArgs,
	})
	checkMetricsService(t, r.Objects, dep)
}

func TestChartAllOptionsOn(t *testing.T) {
	const ns = "platform-coredog"
	r := mustRender(t, chartRelease, ns, values(t, allOptionsOn))
	assertSameSet(t, "objects rendered with every option on", []string{
		"ServiceAccount platform-coredog/coredog-manager",
		"ServiceAccount platform-coredog/coredog-agent",
		"ClusterRole coredog-manager",
		"ClusterRoleBinding coredog-manager",
		"ClusterRole coredog-agent-metrics-auth",
		"ClusterRoleBinding coredog-agent-metrics-auth",
		"ClusterRole coredog-metrics-reader",
		"ServiceAccount platform-coredog/coredog-metrics-scraper",
		"Secret platform-coredog/coredog-metrics-scraper-token",
		"ClusterRoleBinding coredog-metrics-scraper",
		"Role platform-coredog/coredog-manager",
		"RoleBinding platform-coredog/coredog-manager",
		"Role platform-coredog/coredog-agent",
		"RoleBinding platform-coredog/coredog-agent",
		"Deployment platform-coredog/coredog-manager",
		"Service platform-coredog/coredog-manager-metrics",
		"ValidatingAdmissionPolicy coredog-agent",
		"ValidatingAdmissionPolicyBinding coredog-agent",
		"ServiceMonitor platform-coredog/coredog-manager",
		"PodMonitor platform-coredog/coredog-agent",
		"PrometheusRule platform-coredog/coredog",
		"ConfigMap platform-coredog/coredog-dashboard",
		"CoreDumpPolicy cluster",
	}, inventory(r.Objects))

	dep := find[*appsv1.Deployment](t, r.Objects, managerName)
	checkManagerDeployment(t, dep, managerDeploymentWant{
		namespace: ns, image: "registry.example.com/platform/coredog:v1.2.3",
		serviceAccount: managerName, agentServiceAccount: agentName, replicas: 3, metrics: true,
		extraArgs: []string{"--max-concurrent-uploads=8", "--max-upload-attempts=20", "--upload-stall-timeout=5m30s", "--cluster-name=prod eu-west: #1"},
		storageCA: "minio-ca",
	})
	checkMetricsService(t, r.Objects, dep)
	pod := dep.Spec.Template
	c := pod.Spec.Containers[0]
	for what, ok := range map[string]bool{
		"pullPolicy":           c.ImagePullPolicy == corev1.PullAlways,
		"imagePullSecrets":     len(pod.Spec.ImagePullSecrets) == 1 && pod.Spec.ImagePullSecrets[0].Name == "regcred",
		"resources":            c.Resources.Limits.Memory().String() == "1Gi" && c.Resources.Requests.Cpu().String() == "200m",
		"nodeSelector":         pod.Spec.NodeSelector["node-role.kubernetes.io/infra"] == "" && len(pod.Spec.NodeSelector) == 2,
		"tolerations":          len(pod.Spec.Tolerations) == 1 && pod.Spec.Tolerations[0].Key == "node-role.kubernetes.io/infra",
		"affinity":             pod.Spec.Affinity != nil && pod.Spec.Affinity.PodAntiAffinity != nil && len(pod.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 1,
		"priorityClassName":    pod.Spec.PriorityClassName == "system-cluster-critical",
		"podLabels":            pod.Labels["azure.workload.identity/use"] == "true",
		"podAnnotations":       pod.Annotations["example.com/owner"] == "platform",
		"commonLabels on pods": pod.Labels["team"] == "platform",
		"selector not widened": len(dep.Spec.Selector.MatchLabels) == 3,
	} {
		if !ok {
			t.Errorf("Deployment: %s not applied", what)
		}
	}
	for _, m := range r.Objects {
		if m.Obj.GetLabels()["team"] != "platform" {
			t.Errorf("%s lacks commonLabels", m)
		}
	}
	sa := find[*corev1.ServiceAccount](t, r.Objects, managerName)
	if sa.Annotations["eks.amazonaws.com/role-arn"] == "" {
		t.Error("serviceAccount.annotations not on the manager's ServiceAccount")
	}
	for _, name := range []string{managerName, agentName} {
		sa := find[*corev1.ServiceAccount](t, r.Objects, name)
		if len(sa.ImagePullSecrets) != 1 || sa.ImagePullSecrets[0].Name != "regcred" {
			t.Errorf("ServiceAccount %s: imagePullSecrets %v, want regcred (agent pods pull through it)", name, sa.ImagePullSecrets)
		}
	}

	checkMonitoring(t, r.Objects, ns)
	checkAvoidAgentNodes(t, dep, "Required")
	if pod.Spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.LabelSelector.MatchLabels["app.kubernetes.io/component"] != "manager" {
		t.Error("avoidAgentNodes replaced the affinity of values.affinity instead of adding to it")
	}

	p := find[*coredogv1.CoreDumpPolicy](t, r.Objects, "cluster")
	want := coredogv1.CoreDumpPolicySpec{
		HostPath: "/var/lib/coredog/cores", FileNamePattern: "core.%h.%e.%P.%s.%t",
		CorePattern:  coredogv1.CorePatternManage,
		NodeSelector: map[string]string{"node.kubernetes.io/instance-type": "m7i.large"},
		Tolerations:  []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
		Storage: coredogv1.StorageSpec{
			URL: "s3://coredumps/cores?region=eu-west-1", SecretRef: &coredogv1.SecretReference{Name: "coredog-s3"},
		},
	}
	gotJSON, _ := json.Marshal(p.Spec)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("default CoreDumpPolicy spec\n got %s\nwant %s", gotJSON, wantJSON)
	}
	if !strings.Contains(r.Notes, "cluster") || strings.Contains(r.Notes, "sysctl") {
		t.Errorf("NOTES for a Manage policy should name it and not ask for sysctl:\n%s", r.Notes)
	}
}

func TestChartOptionsOff(t *testing.T) {
	r := mustRender(t, chartRelease, defaultNamespace, values(t, "metrics: {enabled: false}"))
	for _, m := range r.Objects {
		switch m.Obj.GetKind() {
		case "Service", "ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap", "Secret":
			t.Errorf("metrics.enabled=false still renders %s", m)
		}
	}
	dep := find[*appsv1.Deployment](t, r.Objects, managerName)
	checkManagerDeployment(t, dep, managerDeploymentWant{
		namespace: defaultNamespace, image: "ghcr.io/coredog/coredog:" + loadChart(t).Metadata.AppVersion,
		serviceAccount: managerName, agentServiceAccount: agentName, replicas: 2, metrics: false, extraArgs: chartDefaultManagerArgs,
	})
}

func TestChartNames(t *testing.T) {
	for _, tc := range []struct {
		release, values, wantPrefix string
	}{
		{"coredog", "", "coredog"},
		{"prod", "", "prod-coredog"},
		{"coredog-prod", "", "coredog-prod"},
		{"prod", "fullnameOverride: dumps", "dumps"},
		{"a-very-long-release-name-that-goes-on-and-on", "", "a-very-long-release-name-that-goes-on-an"},
	} {
		t.Run(tc.release+" "+tc.values, func(t *testing.T) {
			r := mustRender(t, tc.release, "ops", values(t, tc.values))
			dep := find[*appsv1.Deployment](t, r.Objects, tc.wantPrefix+"-manager")
			checkManagerDeployment(t, dep, managerDeploymentWant{
				namespace: "ops", image: "ghcr.io/coredog/coredog:" + loadChart(t).Metadata.AppVersion,
				serviceAccount: tc.wantPrefix + "-manager", agentServiceAccount: tc.wantPrefix + "-agent", replicas: 2, metrics: true, extraArgs: chartDefaultManagerArgs,
			})
			find[*corev1.ServiceAccount](t, r.Objects, tc.wantPrefix+"-agent")
			find[*corev1.Service](t, r.Objects, tc.wantPrefix+"-manager-metrics")
			checkRBAC(t, r.Objects, "ops", tc.wantPrefix+"-manager", tc.wantPrefix+"-agent", "")
		})
	}
}

func TestChartImageDigest(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	r := mustRender(t, chartRelease, defaultNamespace, values(t, "image: {tag: v1, digest: "+digest+"}"))
	dep := find[*appsv1.Deployment](t, r.Objects, managerName)
	checkManagerDeployment(t, dep, managerDeploymentWant{
		namespace: defaultNamespace, image: "ghcr.io/coredog/coredog@" + digest,
		serviceAccount: managerName, agentServiceAccount: agentName, replicas: 2, metrics: true, extraArgs: chartDefaultManagerArgs,
	})
}

// Mistakes that the schema cannot express fail the render with a message that says what to set.
func TestChartRefusesInconsistentValues(t *testing.T) {
	for _, tc := range []struct{ name, values, wantInErr string }{
		{"policy without storage", "defaultPolicy: {enabled: true}", "defaultPolicy.storage.url is required"},
		{"serviceMonitor without metrics", "metrics: {enabled: false, serviceMonitor: {enabled: true}}", "metrics.serviceMonitor.enabled needs metrics.enabled"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(chartRelease, defaultNamespace, values(t, tc.values))
			if err == nil || !strings.Contains(err.Error(), tc.wantInErr) {
				t.Errorf("got error %v, want one containing %q", err, tc.wantInErr)
			}
		})
	}
}

func TestChartNotes(t *testing.T) {
	r := mustRender(t, chartRelease, "ops", nil)
	for _, want := range []string{
		"kubectl get cdp",
		"kubectl -n ops get ds,pods",
		"kubectl get coredumps -A",
		"kubectl -n ops get coredumps",
		"kubectl describe cdp",
		"sysctl -w kernel.core_pattern=/var/lib/coredog/cores/core.%h.%e.%P.%s.%t",
		"kubectl -n ops logs deploy/coredog-manager",
	} {
		if !strings.Contains(r.Notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, r.Notes)
		}
	}
	if strings.Contains(r.Notes, "<no value>") || strings.Contains(r.Notes, "%!") {
		t.Errorf("NOTES.txt has a rendering artefact:\n%s", r.Notes)
	}
}

func subset(sub, full map[string]string) bool {
	if len(sub) == 0 {
		return false
	}
	for k, v := range sub {
		if full[k] != v {
			return false
		}
	}
	return true
}
