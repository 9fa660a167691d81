package install

import (
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/coredog/coredog/controllers"
)

// managerDeploymentWant is what differs between install paths.
type managerDeploymentWant struct {
	namespace, image, serviceAccount, agentServiceAccount string
	// extraArgs follow the common arguments (the chart's manager.* values).
	extraArgs []string
	replicas  int32
	metrics   bool
	// storageCA is the ConfigMap of extra certificate authorities
	// (manager.storageCA), if any.
	storageCA string
}

// checkManagerDeployment asserts what every install of the manager must
// have, whatever the values: the flags cmd/manager reads, probes on the
// health port, and a locked-down security context.
func checkManagerDeployment(t *testing.T, dep *appsv1.Deployment, want managerDeploymentWant) {
	t.Helper()
	if dep.Namespace != want.namespace {
		t.Errorf("Deployment namespace %q, want %q", dep.Namespace, want.namespace)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas != want.replicas {
		t.Errorf("replicas %v, want %d", dep.Spec.Replicas, want.replicas)
	}
	pod := dep.Spec.Template.Spec
	if !subset(dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels) {
		t.Errorf("selector %v does not match the pod labels %v", dep.Spec.Selector.MatchLabels, dep.Spec.Template.Labels)
	}
	if dep.Spec.Selector.MatchLabels["app.kubernetes.io/name"] == "coredog-agent" {
		t.Error("the manager's selector would select agent pods")
	}
	if pod.ServiceAccountName != want.serviceAccount {
		t.Errorf("serviceAccountName %q, want %q", pod.ServiceAccountName, want.serviceAccount)
	}
	if pod.NodeSelector[corev1.LabelOSStable] != "linux" {
		t.Errorf("nodeSelector %v lacks kubernetes.io/os: linux", pod.NodeSelector)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != want.image {
		t.Errorf("image %q, want %q", c.Image, want.image)
	}
	metricsAddr := "0"
	if want.metrics {
		metricsAddr = ":8443"
	}
	wantArgs := []string{
		"--leader-elect",
		"--namespace=" + want.namespace,
		"--agent-image=" + want.image,
		"--agent-service-account=" + want.agentServiceAccount,
		"--metrics-bind-address=" + metricsAddr,
		"--health-probe-bind-address=:8081",
	}
	wantArgs = append(wantArgs, want.extraArgs...)
	if !slices.Equal(c.Args, wantArgs) {
		t.Errorf("args\n got %q\nwant %q", c.Args, wantArgs)
	}
	if len(c.Command) != 0 {
		t.Errorf("command %q: the image's entrypoint is the manager", c.Command)
	}
	wantEnv := 1
	if want.storageCA != "" {
		wantEnv = 2
		checkStorageCA(t, pod, c, want.storageCA)
	}
	if len(c.Env) != wantEnv || c.Env[0].Name != "POD_NAMESPACE" || c.Env[0].ValueFrom == nil ||
		c.Env[0].ValueFrom.FieldRef == nil || c.Env[0].ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
		t.Errorf("env %+v, want POD_NAMESPACE from metadata.namespace (and SSL_CERT_DIR with a storage CA)", c.Env)
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	wantPorts := map[string]int32{"health": 8081}
	if want.metrics {
		wantPorts["metrics"] = 8443
	}
	if len(ports) != len(wantPorts) || ports["health"] != wantPorts["health"] || ports["metrics"] != wantPorts["metrics"] {
		t.Errorf("ports %v, want %v", ports, wantPorts)
	}
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port != intstr.FromString("health") {
			t.Errorf("probe %s: got %+v, want GET %s on port health (8081)", name, p, name)
		}
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want cpu and memory requests and a memory limit", c.Resources)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext %+v: want runAsNonRoot and seccomp RuntimeDefault", psc)
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 ||
		(sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container securityContext %+v: want readOnlyRootFilesystem, no privilege escalation, all capabilities dropped", sc)
	}
	if pod.HostPID || pod.HostNetwork || pod.HostIPC {
		t.Error("the manager must not share the node's namespaces")
	}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			t.Errorf("volume %s mounts the host", v.Name)
		}
	}
}

// checkStorageCA asserts that the ConfigMap of certificate authorities is
// mounted read-only and named by SSL_CERT_DIR, which Go adds to the system
// roots (the image's bundle file still counts).
func checkStorageCA(t *testing.T, pod corev1.PodSpec, c corev1.Container, configMap string) {
	t.Helper()
	const dir = "/etc/coredog/storage-ca"
	var env *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "SSL_CERT_DIR" {
			env = &c.Env[i]
		}
	}
	if env == nil || env.Value != dir {
		t.Errorf("env %+v: want SSL_CERT_DIR=%s", c.Env, dir)
	}
	var vol string
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == configMap {
			vol = v.Name
		}
	}
	if vol == "" {
		t.Fatalf("no volume from ConfigMap %s in %+v", configMap, pod.Volumes)
	}
	for _, m := range c.VolumeMounts {
		if m.Name == vol {
			if m.MountPath != dir || !m.ReadOnly {
				t.Errorf("ConfigMap %s mounted at %s (read-only %v), want read-only at %s", configMap, m.MountPath, m.ReadOnly, dir)
			}
			return
		}
	}
	t.Errorf("volume %s is not mounted", vol)
}

// checkMetricsService asserts the metrics Service selects the manager's pods on port 8443 "metrics".
func checkMetricsService(t *testing.T, objs []manifest, dep *appsv1.Deployment) {
	t.Helper()
	svc := find[*corev1.Service](t, objs, dep.Name+"-metrics")
	if svc.Namespace != dep.Namespace {
		t.Errorf("metrics Service in %q, Deployment in %q", svc.Namespace, dep.Namespace)
	}
	if !subset(svc.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("metrics Service selector %v does not select the manager's pods %v", svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != 8443 ||
		svc.Spec.Ports[0].TargetPort != intstr.FromString("metrics") {
		t.Errorf("metrics Service ports %+v, want 8443 named metrics", svc.Spec.Ports)
	}
}

// The install paths name the agents' ServiceAccount the way the manager
// defaults it, so that a manager started without the flag still matches.
func TestNamesMatchManagerDefaults(t *testing.T) {
	if controllers.DefaultAgentServiceAccount != agentName {
		t.Errorf("controllers.DefaultAgentServiceAccount is %q; config/ and the chart name the agent ServiceAccount %q", controllers.DefaultAgentServiceAccount, agentName)
	}
	if controllers.DefaultNamespace != defaultNamespace {
		t.Errorf("controllers.DefaultNamespace is %q; config/default installs into %q", controllers.DefaultNamespace, defaultNamespace)
	}
}
