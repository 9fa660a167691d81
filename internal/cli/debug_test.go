package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestPlanDebug(t *testing.T) {
	for _, tc := range []struct {
		name                string
		cd                  coredogv1.CoreDump
		image, ns, pod      string
		cmdline             string // the stored command line
		wantImage, wantNS   string
		wantPod, wantArch   string
		wantExe             string
		wantExact, wantNote bool
		wantErr             string
	}{
		{name: "pinned to the image ID", cd: testDump("core-a", 0),
			wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-core-a", wantArch: "amd64",
			wantExe: "/usr/bin/server", wantExact: true, wantNote: true},
		{name: "local image ID: the tag", cd: testDump("core-a", 0, func(cd *coredogv1.CoreDump) { cd.Status.Pod.ImageID = "sha256:" + sha64 }),
			wantImage: "registry.example/web:1.2", wantNS: "team-a", wantPod: "coredog-debug-core-a", wantArch: "amd64", wantExe: "/usr/bin/server", wantExact: true},
		{name: "docker-pullable image ID", cd: testDump("core-a", 0, func(cd *coredogv1.CoreDump) {
			cd.Status.Pod.ImageID = "docker-pullable://registry.example/web@sha256:" + sha64
		}), wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-core-a", wantArch: "amd64", wantExe: "/usr/bin/server", wantExact: true, wantNote: true},
		{name: "overrides", cd: testDump("core-a", 0), image: "mine:dbg", ns: "scratch", pod: "dbg",
			wantImage: "mine:dbg", wantNS: "scratch", wantPod: "dbg", wantArch: "amd64", wantExe: "/usr/bin/server", wantExact: true},
		{name: "arm64, path from the command line", cd: testDump("core-a", 0, func(cd *coredogv1.CoreDump) {
			cd.Spec.ELF.Machine, cd.Spec.ELF.CrashModule = "aarch64", "/lib/libc.so.6"
		}), cmdline: "/usr/bin/server --port 1", wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-core-a", wantArch: "arm64", wantExe: "/usr/bin/server", wantExact: true, wantNote: true},
		{name: "name only", cd: testDump("core-a", 0, func(cd *coredogv1.CoreDump) {
			cd.Spec.ELF = nil
		}), cmdline: "server --port 1", wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-core-a", wantExe: "server", wantNote: true},
		{name: "comm cut at 15 bytes", cd: testDump("core-a", 0, func(cd *coredogv1.CoreDump) {
			cd.Spec.Process.Executable = "very-long-serve"
			cd.Spec.ELF.CrashModule = "/opt/app/very-long-server-name"
		}), wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-core-a", wantArch: "amd64", wantExe: "/opt/app/very-long-server-name", wantExact: true, wantNote: true},
		{name: "the crash module wins over the command line", cd: testDump("core-a", 0), cmdline: "/opt/other --x",
			wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-core-a", wantArch: "amd64", wantExe: "/usr/bin/server", wantExact: true, wantNote: true},
		{name: "long dump name", cd: testDump(strings.Repeat("x", 70), 0),
			wantImage: "registry.example/web@sha256:" + sha64, wantNS: "team-a", wantPod: "coredog-debug-" + strings.Repeat("x", 49), wantArch: "amd64", wantExe: "/usr/bin/server", wantExact: true, wantNote: true},
		{name: "no pod, no image", cd: testDump("core-a", 0, withPod("", "", "", "")), wantErr: "pass --image"},
		{name: "no pod, image given", cd: testDump("core-a", 0, withPod("", "", "", "")), image: "x:1",
			wantImage: "x:1", wantNS: "default", wantPod: "coredog-debug-core-a", wantArch: "amd64", wantExe: "/usr/bin/server", wantExact: true},
	} {
		p, err := PlanDebug(&tc.cd, tc.image, tc.ns, tc.pod)
		p = withCommandLine(p, tc.cmdline)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if p.Image != tc.wantImage || p.Namespace != tc.wantNS || p.PodName != tc.wantPod || p.Arch != tc.wantArch ||
			p.Executable != tc.wantExe || p.ExecutableExact != tc.wantExact || (p.ImageNote != "") != tc.wantNote {
			t.Errorf("%s: plan %+v", tc.name, p)
		}
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"core-a":          "core-a",
		"/usr/bin/server": "/usr/bin/server",
		"a b":             "'a b'",
		"it's":            `'it'\''s'`,
		"":                "''",
		"$(rm -rf /)":     "'$(rm -rf /)'",
		"a\nb":            `$'a\x0ab'`,
		"it's\x1b[2J":     `$'it\'s\x1b[2J'`,
		"\xff\\":          `$'\xff\\'`,
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRenderDebugSteps(t *testing.T) {
	cd := testDump("core-a", 0)
	p, err := PlanDebug(&cd, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	RenderDebugSteps(&b, p, "")
	for _, want := range []string{
		"kubectl coredog download core-a -n coredog-system -o core\n",
		"kubectl run coredog-debug-core-a -n team-a --image=registry.example/web@sha256:" + sha64 + " --restart=Never --overrides='{\"apiVersion\":\"v1\",\"spec\":{\"automountServiceAccountToken\":false,\"enableServiceLinks\":false,\"nodeSelector\":{\"kubernetes.io/arch\":\"amd64\"}}}' --command -- sleep infinity\n",
		"kubectl wait -n team-a --for=condition=Ready pod/coredog-debug-core-a\n",
		"kubectl cp core team-a/coredog-debug-core-a:/tmp/core\n",
		"kubectl exec -it -n team-a coredog-debug-core-a -- gdb /usr/bin/server /tmp/core\n",
		"If the image has no gdb",
		"kubectl debug -it -n team-a coredog-debug-core-a --image='<an image with gdb>' --target=coredog-debug-core-a -c coredog-gdb -- sh\n",
		"gdb -iex 'set sysroot /proc/1/root' /proc/1/root/usr/bin/server /tmp/core",
		"kubectl debug -it -n team-a web-0 --image='<an image with gdb>' --target=app -c coredog-gdb -- sh\n",
		"kubectl delete pod -n team-a coredog-debug-core-a\n",
		"since a tag may have moved",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("steps lack %q:\n%s", want, b.String())
		}
	}

	cd = testDump("core-b", 0, func(cd *coredogv1.CoreDump) { cd.Spec.ELF = nil })
	p, _ = PlanDebug(&cd, "", "", "")
	b.Reset()
	RenderDebugSteps(&b, p, "gdb:14")
	for _, want := range []string{"-- gdb server /tmp/core", "not its path", "--image=gdb:14", "/proc/1/root/path/to/server"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("steps lack %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "kubernetes.io/arch") {
		t.Errorf("steps pin an architecture the dump does not know:\n%s", b.String())
	}
	if strings.Contains(b.String(), "--local") {
		t.Errorf("steps offer --local for a dump without stored modules:\n%s", b.String())
	}

	cd = testDump("core-c", 0, func(cd *coredogv1.CoreDump) {
		cd.Status.Analysis = &coredogv1.CrashAnalysis{Outcome: coredogv1.AnalysisComplete, Modules: []coredogv1.CrashModule{
			{Path: "/usr/bin/server", BuildID: "0123456789abcdef", State: coredogv1.ModuleStored},
			{Path: "/lib/libc.so.6", BuildID: "fedcba9876543210", State: coredogv1.ModuleStored},
			{Path: "/lib/libgone.so", State: coredogv1.ModuleMissing},
		}}
	})
	p, _ = PlanDebug(&cd, "", "", "")
	b.Reset()
	RenderDebugSteps(&b, p, "")
	for _, want := range []string{"2 of the program's files were kept by build-id", "kubectl coredog debug core-c -n coredog-system --local\n", "kubectl coredog debuginfod &\n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("steps lack %q:\n%s", want, b.String())
		}
	}
}

func TestDebugPod(t *testing.T) {
	cd := testDump("core-a", 0)
	p, _ := PlanDebug(&cd, "", "", "")
	pod := DebugPod(p, []corev1.LocalObjectReference{{Name: "regcred"}})
	c := pod.Spec.Containers[0]
	switch {
	case pod.Name != "coredog-debug-core-a" || pod.Namespace != "team-a":
		t.Errorf("pod %s/%s", pod.Namespace, pod.Name)
	case c.Image != p.Image || strings.Join(c.Command, " ") != "sleep infinity" || c.Name != debugContainer:
		t.Errorf("container %+v", c)
	case pod.Spec.NodeName != "" || pod.Spec.NodeSelector["kubernetes.io/arch"] != "amd64" || pod.Spec.NodeSelector["kubernetes.io/os"] != "linux":
		t.Errorf("placement %q %v", pod.Spec.NodeName, pod.Spec.NodeSelector)
	case *pod.Spec.AutomountServiceAccountToken || pod.Spec.RestartPolicy != corev1.RestartPolicyNever || c.SecurityContext == nil || *c.SecurityContext.AllowPrivilegeEscalation:
		t.Errorf("pod is not locked down: %+v", pod.Spec)
	case len(pod.Spec.ImagePullSecrets) != 1 || pod.Annotations[annotationDebugFor] != "coredog-system/core-a":
		t.Errorf("pull secrets %v, annotations %v", pod.Spec.ImagePullSecrets, pod.Annotations)
	}
}

func TestPodProgress(t *testing.T) {
	status := func(phase corev1.PodPhase, state corev1.ContainerState) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "p"}, Status: corev1.PodStatus{Phase: phase,
			ContainerStatuses: []corev1.ContainerStatus{{Name: debugContainer, State: state}}}}
	}
	for _, tc := range []struct {
		name     string
		pod      *corev1.Pod
		state    string
		done     bool
		errorHas string
	}{
		{"new", &corev1.Pod{}, "Pending", false, ""},
		{"unschedulable", &corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Message: "0/3 nodes are available"}}}}, "not scheduled: 0/3 nodes are available", false, ""},
		{"pulling", status(corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}}), "ContainerCreating", false, ""},
		{"pull error, retried", status(corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull"}}), "ErrImagePull", false, ""},
		{"pull back-off", status(corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff", Message: "not found"}}), "ImagePullBackOff", true, "cannot pull its image"},
		{"no sleep", status(corev1.PodPending, corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "RunContainerError", Message: "exec: \"sleep\": not found"}}), "RunContainerError", true, "without `sleep`"},
		{"exited", status(corev1.PodFailed, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 127, Reason: "Error"}}), "the container exited with code 127 (Error)", true, "cannot idle"},
		{"running", status(corev1.PodRunning, corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}), "Running", true, ""},
	} {
		state, done, err := PodProgress(tc.pod)
		if state != tc.state || done != tc.done || (tc.errorHas == "") != (err == nil) || err != nil && (!strings.Contains(err.Error(), tc.errorHas) || !errors.Is(err, errPodNotRunning)) {
			t.Errorf("%s: %q, %v, %v", tc.name, state, done, err)
		}
	}
}
