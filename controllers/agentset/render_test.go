package agentset

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestRenderDaemonSet(t *testing.T) {
	opts := Options{Namespace: "coredog-system", DefaultImage: "coredog:1", ServiceAccount: "coredog-agent", TLSHash: "abc"}
	base := func() *coredogv1.CoreDumpPolicy {
		return &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p", Generation: 3}}
	}
	cases := []struct {
		name   string
		mutate func(*coredogv1.CoreDumpPolicy)
		check  func(t *testing.T, c corev1.Container, pod corev1.PodSpec)
	}{
		{"defaults", func(*coredogv1.CoreDumpPolicy) {}, func(t *testing.T, c corev1.Container, pod corev1.PodSpec) {
			expect(t, c.Image, "coredog:1")
			expect(t, pod.Volumes[0].HostPath.Path, coredogv1.DefaultHostPath)
			expect(t, c.VolumeMounts[0].MountPath, coredogv1.DefaultHostPath)
			expectArg(t, c, "--file-name-pattern="+coredogv1.DefaultFileNamePattern)
			expectArg(t, c, "--tls-dir="+TLSMountPath)
			expectNoArg(t, c, "--core-pattern=Manage")
			expect(t, pod.HostPID, true)
			expect(t, pod.NodeSelector[corev1.LabelOSStable], "linux")
			expect(t, c.Resources.Requests.Memory().String(), "32Mi")
			expect(t, *c.SecurityContext.ReadOnlyRootFilesystem, true)
			expect(t, *c.SecurityContext.AllowPrivilegeEscalation, false)
			expect(t, c.SecurityContext.Privileged == nil, true)
			expect(t, fmt.Sprint(c.SecurityContext.Capabilities.Add), "[DAC_OVERRIDE FOWNER]")
			// The CA certificate only: no Secret with a serving key is
			// mounted (each agent makes its own key, in memory).
			expect(t, pod.Volumes[1].Secret.SecretName, "coredog-p-agent-ca")
			for _, v := range pod.Volumes {
				if v.Secret != nil && v.Secret.SecretName != "coredog-p-agent-ca" {
					t.Errorf("the agent mounts Secret %s", v.Secret.SecretName)
				}
			}
			expect(t, c.LivenessProbe.HTTPGet.Path, "/healthz")
			expectMemoryLimitEnv(t, c)
		}},
		{"manage core pattern is privileged", func(p *coredogv1.CoreDumpPolicy) {
			p.Spec.CorePattern = coredogv1.CorePatternManage
		}, func(t *testing.T, c corev1.Container, _ corev1.PodSpec) {
			expect(t, *c.SecurityContext.Privileged, true)
			expectArg(t, c, "--core-pattern=Manage")
			expectArg(t, c, "--sysctl-path="+SysctlPath)
		}},
		{"pipe core pattern is privileged", func(p *coredogv1.CoreDumpPolicy) {
			p.Spec.CorePattern = coredogv1.CorePatternPipe
		}, func(t *testing.T, c corev1.Container, _ corev1.PodSpec) {
			expect(t, *c.SecurityContext.Privileged, true)
			expectArg(t, c, "--core-pattern=Pipe")
		}},
		{"placement", func(p *coredogv1.CoreDumpPolicy) {
			p.Spec.NodeSelector = map[string]string{"pool": "a", corev1.LabelOSStable: "windows"}
			p.Spec.Tolerations = []corev1.Toleration{{Key: "z"}, {Key: "a"}}
			p.Spec.PriorityClassName = "pc"
		}, func(t *testing.T, _ corev1.Container, pod corev1.PodSpec) {
			expect(t, pod.NodeSelector["pool"], "a")
			// A policy may not move agents off Linux: it would only make them crash-loop.
			expect(t, pod.NodeSelector[corev1.LabelOSStable], "linux")
			expect(t, pod.Tolerations[0].Key, "a")
			expect(t, pod.PriorityClassName, "pc")
		}},
		{"overrides", func(p *coredogv1.CoreDumpPolicy) {
			p.Spec.HostPath = "/data/cores"
			p.Spec.FileNamePattern = "core.%e.%p"
			p.Spec.Agent.Image = "mine:2"
			p.Spec.Agent.Resources.Limits = corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("1Gi")}
			p.Spec.Detection.PollInterval = &metav1.Duration{Duration: 30 * time.Second}
			p.Spec.Detection.SettleTime = &metav1.Duration{Duration: 1500 * time.Millisecond}
			p.Spec.Limits.MaxNodeUsage = new(resource.MustParse("20Gi"))
			p.Spec.Limits.MinNodeFree = "10%"
			p.Spec.Limits.CoreDumps = coredogv1.CoreDumpBudgetSpec{
				NodeBurst: new(int32(50)), NodePerMinute: new(int32(20)), SignatureBurst: new(int32(3)), SignaturePerHour: new(int32(12)),
			}
		}, func(t *testing.T, c corev1.Container, pod corev1.PodSpec) {
			expectArg(t, c, "--node-burst=50")
			expectArg(t, c, "--node-per-minute=20")
			expectArg(t, c, "--signature-burst=3")
			expectArg(t, c, "--signature-per-hour=12")
			expectArg(t, c, "--poll-interval=30s")
			expectArg(t, c, "--settle-time=1.5s")
			expectArg(t, c, "--max-node-usage=20Gi")
			expectArg(t, c, "--min-node-free=10%")
			expect(t, c.Image, "mine:2")
			expectArg(t, c, "--dir=/data/cores")
			expectArg(t, c, "--file-name-pattern=core.%e.%p")
			expect(t, pod.Volumes[0].HostPath.Path, "/data/cores")
			expect(t, c.Resources.Limits.Memory().String(), "1Gi")
			expect(t, len(c.Resources.Requests), 0)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := base()
			tc.mutate(p)
			ds := RenderDaemonSet(p, opts)
			expect(t, ds.Name, "coredog-agent-p")
			expect(t, ds.Namespace, "coredog-system")
			expect(t, ds.Spec.Template.Annotations[coredogv1.AnnotationTLSHash], "abc")
			expect(t, ds.Spec.Template.Annotations[coredogv1.AnnotationPolicyGeneration], "3")
			for k, v := range ds.Spec.Selector.MatchLabels {
				expect(t, ds.Spec.Template.Labels[k], v)
			}
			tc.check(t, ds.Spec.Template.Spec.Containers[0], ds.Spec.Template.Spec)
		})
	}
}

func expect[T comparable](t *testing.T, got, want T) {
	t.Helper()
	if got != want {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func expectArg(t *testing.T, c corev1.Container, arg string) {
	t.Helper()
	if slices.Contains(c.Args, arg) {
		return
	}
	t.Fatalf("args %v lack %q", c.Args, arg)
}

func expectNoArg(t *testing.T, c corev1.Container, arg string) {
	t.Helper()
	for _, a := range c.Args {
		if a == arg {
			t.Fatalf("args %v have %q", c.Args, arg)
		}
	}
}

// expectMemoryLimitEnv checks that the Go runtime learns the container's
// memory limit in plain bytes, the only unit-less form GOMEMLIMIT takes.
func expectMemoryLimitEnv(t *testing.T, c corev1.Container) {
	t.Helper()
	for _, e := range c.Env {
		if e.Name != "GOMEMLIMIT" {
			continue
		}
		ref := e.ValueFrom.ResourceFieldRef
		if e.Value != "" || ref == nil || ref.Resource != "limits.memory" || ref.ContainerName != c.Name || ref.Divisor.Cmp(resource.MustParse("1")) != 0 {
			t.Errorf("GOMEMLIMIT = %+v, want the container's limits.memory in bytes", e)
		}
		return
	}
	t.Errorf("no GOMEMLIMIT in %+v", c.Env)
}

// The pods of privileged agents carry LabelPrivileged (the manager's
// anti-affinity selects it), the others not; the selector never does.
func TestRenderDaemonSetPrivilegedLabel(t *testing.T) {
	for _, tc := range []struct {
		mode coredogv1.CorePatternMode
		want bool
	}{
		{"", false},
		{coredogv1.CorePatternObserve, false},
		{coredogv1.CorePatternManage, true},
		{coredogv1.CorePatternPipe, true},
	} {
		p := &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}}
		p.Spec.CorePattern = tc.mode
		ds := RenderDaemonSet(p, Options{Namespace: "ns", DefaultImage: "img"})
		got := ds.Spec.Template.Labels[LabelPrivileged] == "true"
		if got != tc.want {
			t.Errorf("mode %q: pod label %s set %v, want %v", tc.mode, LabelPrivileged, got, tc.want)
		}
		if _, ok := ds.Spec.Selector.MatchLabels[LabelPrivileged]; ok {
			t.Errorf("mode %q: the selector holds %s; changing a policy's mode would orphan its pods", tc.mode, LabelPrivileged)
		}
	}
}
