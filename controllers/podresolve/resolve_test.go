package podresolve

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

const testNode = "node-1"

var (
	dumpedAt = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	idA      = strings.Repeat("a1", 32)
	idB      = strings.Repeat("b2", 32)
	idC      = strings.Repeat("c3", 32)
)

// Builders for the pods the tests need; each option changes one thing.

type podOpt func(*corev1.Pod)

func pod(ns, name string, opts ...podOpt) corev1.Pod {
	p := corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)},
		Spec: corev1.PodSpec{
			NodeName:   testNode,
			Containers: []corev1.Container{{Name: "app", Image: "example.com/app:1"}},
		},
		Status: corev1.PodStatus{
			StartTime:         new(metav1.NewTime(dumpedAt.Add(-time.Hour))),
			ContainerStatuses: []corev1.ContainerStatus{running("app", "")},
		},
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func node(n string) podOpt         { return func(p *corev1.Pod) { p.Spec.NodeName = n } }
func specHostname(h string) podOpt { return func(p *corev1.Pod) { p.Spec.Hostname = h } }
func hostNetwork() podOpt          { return func(p *corev1.Pod) { p.Spec.HostNetwork = true } }
func startedAt(t time.Time) podOpt {
	return func(p *corev1.Pod) { p.Status.StartTime = new(metav1.NewTime(t)) }
}

// containers replaces the pod's containers and their statuses.
func containers(cs []corev1.Container, sts ...corev1.ContainerStatus) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers = cs
		p.Status.ContainerStatuses = sts
	}
}

func initContainer(c corev1.Container, st corev1.ContainerStatus) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
		p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, st)
	}
}

func ephemeralContainer(name, image string, st corev1.ContainerStatus) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: image},
		})
		p.Status.EphemeralContainerStatuses = append(p.Status.EphemeralContainerStatuses, st)
	}
}

// status replaces the status of the container of that name.
func status(st corev1.ContainerStatus) podOpt {
	return func(p *corev1.Pod) {
		for i := range p.Status.ContainerStatuses {
			if p.Status.ContainerStatuses[i].Name == st.Name {
				p.Status.ContainerStatuses[i] = st
				return
			}
		}
		p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, st)
	}
}

func running(name, id string) corev1.ContainerStatus {
	st := corev1.ContainerStatus{
		Name:    name,
		Image:   "example.com/" + name + ":1",
		ImageID: "example.com/" + name + "@sha256:" + strings.Repeat("0", 64),
		State:   corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(dumpedAt.Add(-time.Hour))}},
	}
	if id != "" {
		st.ContainerID = "containerd://" + id
	}
	return st
}

// restarted is a running container whose last instance terminated.
func restarted(st corev1.ContainerStatus, last corev1.ContainerStateTerminated) corev1.ContainerStatus {
	st.RestartCount = 1
	st.LastTerminationState = corev1.ContainerState{Terminated: &last}
	return st
}

// terminated is a container that is not running now.
func terminated(st corev1.ContainerStatus, t corev1.ContainerStateTerminated) corev1.ContainerStatus {
	st.State = corev1.ContainerState{Terminated: &t}
	return st
}

func exit(code int32, at time.Time) corev1.ContainerStateTerminated {
	return corev1.ContainerStateTerminated{ExitCode: code, Reason: "Error", FinishedAt: metav1.NewTime(at)}
}

// db0 is a StatefulSet's first pod running postgres; two namespaces have one.
func db0(ns string, st corev1.ContainerStatus, opts ...podOpt) corev1.Pod {
	st.Name = "postgres"
	return pod(ns, "db-0", append([]podOpt{containers(
		[]corev1.Container{{Name: "postgres", Image: "docker.io/library/postgres:16"}}, st)}, opts...)...)
}

// web is a pod with three containers that run different programs.
func web(opts ...podOpt) corev1.Pod {
	return pod("shop", "web-1", append([]podOpt{containers(
		[]corev1.Container{
			{Name: "app", Image: "registry.example.com:5000/shop/checkout:1.2", Command: []string{"/usr/local/bin/checkout-server"}},
			{Name: "proxy", Image: "envoyproxy/envoy:v1.30@sha256:" + strings.Repeat("e", 64)},
			{Name: "worker", Image: "example.com/shop/jobs:3", Command: []string{"tini", "--"}, Args: []string{"/opt/bin/queue-consumer-daemon", "-v"}},
		},
		running("app", idA), running("proxy", idB), running("worker", idC),
	)}, opts...)...)
}

type want struct {
	pod        string // namespace/name, "" for none
	container  string
	by         coredogv1.ResolvedBy
	image      string // checked when set
	imageID    string // checked when set
	candidates []string
	message    []string // substrings the message must hold
}

func TestResolve(t *testing.T) {
	crash := func(id, host, exe string) Crash {
		return Crash{NodeName: testNode, ContainerID: id, Hostname: host, Executable: exe, Signal: 11, DumpedAt: dumpedAt}
	}
	noTime := func(c Crash) Crash { c.DumpedAt = time.Time{}; return c }
	noSignal := func(c Crash) Crash { c.Signal = 0; return c }

	cases := []struct {
		name   string
		crash  Crash
		pods   []corev1.Pod
		window time.Duration
		want   want
	}{
		// Rule 1: container ID.
		{
			name:  "container ID: current",
			crash: crash("containerd://"+idA, "", ""),
			pods:  []corev1.Pod{pod("team-a", "other", status(running("app", idB))), pod("team-a", "web", status(running("app", idA)))},
			want: want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByContainerID,
				image: "example.com/app:1", imageID: "example.com/app@sha256:" + strings.Repeat("0", 64),
				message: []string{`Container ID "containerd://` + idA + `" is container "app" of pod team-a/web`}},
		},
		{
			name:  "container ID: last state after a restart",
			crash: crash("containerd://"+idA, "web", ""),
			pods: []corev1.Pod{pod("team-a", "web", status(restarted(running("app", idB),
				corev1.ContainerStateTerminated{ExitCode: 139, ContainerID: "containerd://" + idA, FinishedAt: metav1.NewTime(dumpedAt)})))},
			want: want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByContainerID, message: []string{"restarted since"}},
		},
		{
			name:  "container ID: current state terminated",
			crash: crash("containerd://"+idA, "", ""),
			pods: []corev1.Pod{pod("team-a", "job-x", status(terminated(running("app", ""),
				corev1.ContainerStateTerminated{ExitCode: 139, ContainerID: "containerd://" + idA})))},
			want: want{pod: "team-a/job-x", container: "app", by: coredogv1.ResolvedByContainerID},
		},
		{
			name:  "container ID: init container",
			crash: crash("containerd://"+idA, "", ""),
			pods: []corev1.Pod{pod("team-a", "web", status(running("app", idB)),
				initContainer(corev1.Container{Name: "migrate", Image: "example.com/migrate:2"}, running("migrate", idA)))},
			want: want{pod: "team-a/web", container: "migrate", by: coredogv1.ResolvedByContainerID, image: "example.com/migrate:1"},
		},
		{
			name:  "container ID: ephemeral container",
			crash: crash("containerd://"+idA, "", ""),
			pods: []corev1.Pod{pod("team-a", "web", status(running("app", idB)),
				ephemeralContainer("debugger", "busybox:1.36", running("debugger", idA)))},
			want: want{pod: "team-a/web", container: "debugger", by: coredogv1.ResolvedByContainerID},
		},
		{
			name:  "container ID: crash without prefix",
			crash: crash(idA, "", ""),
			pods:  []corev1.Pod{pod("team-a", "web", status(running("app", idA)))},
			want:  want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByContainerID},
		},
		{
			name:  "container ID: different prefix and upper case",
			crash: crash("cri-o://"+strings.ToUpper(idA), "", ""),
			pods:  []corev1.Pod{pod("team-a", "web", status(running("app", idA)))},
			want:  want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByContainerID},
		},
		{
			name:  "container ID: status without prefix",
			crash: crash("docker://"+idA, "", ""),
			pods: []corev1.Pod{pod("team-a", "web", status(func() corev1.ContainerStatus {
				st := running("app", "")
				st.ContainerID = idA
				return st
			}()))},
			want: want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByContainerID},
		},
		{
			name:  "container ID: image from spec when the status lacks it",
			crash: crash("containerd://"+idA, "", ""),
			pods: []corev1.Pod{pod("team-a", "web", status(func() corev1.ContainerStatus {
				st := running("app", idA)
				st.Image, st.ImageID = "", ""
				return st
			}()))},
			want: want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByContainerID, image: "example.com/app:1"},
		},
		{
			name:  "container ID: on two pods is not a choice",
			crash: crash("containerd://"+idA, "", ""),
			pods:  []corev1.Pod{pod("team-a", "web", status(running("app", idA))), pod("team-b", "web", status(running("app", idA)))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/web/app", "team-b/web/app"},
				message: []string{"matches 2 containers"}},
		},
		{
			name:  "container ID: no match falls through to the hostname",
			crash: crash("containerd://"+idC, "web", ""),
			pods:  []corev1.Pod{pod("team-a", "web", status(running("app", idA)))},
			want: want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByHostname,
				message: []string{`No pod on node node-1 has container ID "containerd://` + idC + `"`, "only pod on node node-1 with hostname"}},
		},
		{
			name:  "container ID: no match and no hostname",
			crash: crash("containerd://"+idC, "", ""),
			pods:  []corev1.Pod{pod("team-a", "web", status(running("app", idA)))},
			want: want{by: coredogv1.ResolvedByUnresolved,
				message: []string{`No pod on node node-1 has container ID "containerd://` + idC + `"`}},
		},
		{
			name:  "container ID: an empty ID after the prefix matches nothing",
			crash: crash("containerd://", "", ""),
			pods:  []corev1.Pod{pod("team-a", "web", status(func() corev1.ContainerStatus { st := running("app", ""); st.ContainerID = "containerd://"; return st }()))},
			want:  want{by: coredogv1.ResolvedByUnresolved, message: []string{"neither a container ID nor a hostname"}},
		},

		// Rule 2: hostname.
		{
			name:  "hostname: single pod, single container",
			crash: crash("", "web-7d9f-x2x", "app"),
			pods:  []corev1.Pod{pod("team-a", "web-7d9f-x2x"), pod("team-a", "other")},
			want:  want{pod: "team-a/web-7d9f-x2x", container: "app", by: coredogv1.ResolvedByHostname, image: "example.com/app:1"},
		},
		{
			name:  "hostname: spec.hostname wins over the name",
			crash: crash("", "myhost", ""),
			pods:  []corev1.Pod{pod("team-a", "x-123", specHostname("myhost"))},
			want:  want{pod: "team-a/x-123", container: "app", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "hostname: the name does not match when spec.hostname is set",
			crash: crash("", "x-123", ""),
			pods:  []corev1.Pod{pod("team-a", "x-123", specHostname("myhost"))},
			want:  want{by: coredogv1.ResolvedByUnresolved, message: []string{`No pod on node node-1 has hostname "x-123"`}},
		},
		{
			name:  "hostname: host-network pod never matches",
			crash: crash("", "node-exporter", ""),
			pods:  []corev1.Pod{pod("monitoring", "node-exporter", hostNetwork())},
			want: want{by: coredogv1.ResolvedByUnresolved,
				message: []string{`No pod on node node-1 has hostname "node-exporter"`, "1 host-network pods"}},
		},
		{
			name:  "hostname: 64-character pod name truncated to 63",
			crash: crash("", strings.Repeat("a", 60)+"-bc", ""),
			pods:  []corev1.Pod{pod("team-a", strings.Repeat("a", 60)+"-bcd")},
			want:  want{pod: "team-a/" + strings.Repeat("a", 60) + "-bcd", container: "app", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "hostname: truncation drops a trailing dash, as the kubelet does",
			crash: crash("", strings.Repeat("a", 62), ""),
			pods:  []corev1.Pod{pod("team-a", strings.Repeat("a", 62)+"-xyz")},
			want:  want{pod: "team-a/" + strings.Repeat("a", 62) + "-xyz", container: "app", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "hostname: the untruncated 64-character name cannot be a hostname",
			crash: crash("", strings.Repeat("a", 60)+"-bcd", ""),
			pods:  []corev1.Pod{pod("team-a", strings.Repeat("a", 60)+"-bcd")},
			want:  want{by: coredogv1.ResolvedByUnresolved},
		},
		{
			name:  "hostname: setHostnameAsFQDN gives the FQDN",
			crash: crash("", "db-0.db.team-a.svc.cluster.local", ""),
			pods: []corev1.Pod{pod("team-a", "db-0", func(p *corev1.Pod) {
				p.Spec.Subdomain = "db"
				p.Spec.SetHostnameAsFQDN = new(true)
			}), pod("team-b", "db-0", func(p *corev1.Pod) {
				p.Spec.Subdomain = "db"
				p.Spec.SetHostnameAsFQDN = new(true)
			})},
			want: want{pod: "team-a/db-0", container: "app", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "hostname: hostnameOverride replaces the name",
			crash: crash("", "app.example", ""),
			pods:  []corev1.Pod{pod("team-a", "web", func(p *corev1.Pod) { p.Spec.HostnameOverride = new("app.example") })},
			want:  want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "hostname: no match says what was tried",
			crash: crash("containerd://"+idC, "nope", ""),
			pods:  []corev1.Pod{pod("team-a", "web")},
			want: want{by: coredogv1.ResolvedByUnresolved,
				message: []string{`No pod on node node-1 has container ID "containerd://` + idC + `" or hostname "nope"`}},
		},

		// Rule 3: two StatefulSet pods named db-0 on one node.
		{
			name:  "db-0: no evidence",
			crash: crash("", "db-0", "postgres"),
			pods:  []corev1.Pod{db0("team-a", running("", idA)), db0("team-b", running("", idB))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"},
				message: []string{"2 pods on node node-1 have hostname \"db-0\"", "no container terminated with exit code 139", "team-a/db-0/postgres, team-b/db-0/postgres", "not guessing"}},
		},
		{
			name:  "db-0: one terminated with 139 two seconds after the dump",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				db0("team-b", restarted(running("", idB), exit(139, dumpedAt.Add(2*time.Second))))},
			want: want{pod: "team-b/db-0", container: "postgres", by: coredogv1.ResolvedByTermination,
				message: []string{"team-b/db-0/postgres terminated with exit code 139"}},
		},
		{
			name:  "db-0: the termination's signal field counts too",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				db0("team-b", restarted(running("", idB), corev1.ContainerStateTerminated{ExitCode: 1, Signal: 11, FinishedAt: metav1.NewTime(dumpedAt)}))},
			want: want{pod: "team-b/db-0", container: "postgres", by: coredogv1.ResolvedByTermination},
		},
		{
			name:  "db-0: the current state's termination counts (pod failed)",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				db0("team-b", terminated(running("", idB), exit(139, dumpedAt.Add(time.Second))))},
			want: want{pod: "team-b/db-0", container: "postgres", by: coredogv1.ResolvedByTermination},
		},
		{
			name:  "db-0: both terminated with 139 within the window",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", restarted(running("", idA), exit(139, dumpedAt.Add(-time.Second)))),
				db0("team-b", restarted(running("", idB), exit(139, dumpedAt.Add(2*time.Second))))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"}},
		},
		{
			name:  "db-0: a termination outside the window is no evidence",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", restarted(running("", idA), exit(139, dumpedAt.Add(-10*time.Minute)))),
				db0("team-b", running("", idB))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"}},
		},
		{
			name:  "db-0: a reason without the signal is no evidence",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", restarted(running("", idA), corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled", FinishedAt: metav1.NewTime(dumpedAt)})),
				db0("team-b", restarted(running("", idB), exit(1, dumpedAt)))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"}},
		},
		{
			name:   "db-0: a window of zero means the default window",
			crash:  crash("", "db-0", "postgres"),
			window: -1,
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				db0("team-b", restarted(running("", idB), exit(139, dumpedAt.Add(20*time.Second))))},
			want: want{pod: "team-b/db-0", container: "postgres", by: coredogv1.ResolvedByTermination},
		},
		{
			name:  "db-0: dump time unknown, one exit code 139 anywhere is weak evidence that counts",
			crash: noTime(crash("", "db-0", "postgres")),
			pods: []corev1.Pod{db0("team-a", restarted(running("", idA), exit(139, dumpedAt.Add(-3*time.Hour)))),
				db0("team-b", running("", idB))},
			want: want{pod: "team-a/db-0", container: "postgres", by: coredogv1.ResolvedByTermination, message: []string{"dump time is unknown"}},
		},
		{
			name:  "db-0: dump time unknown, two exit codes 139 are no evidence",
			crash: noTime(crash("", "db-0", "postgres")),
			pods: []corev1.Pod{db0("team-a", restarted(running("", idA), exit(139, dumpedAt))),
				db0("team-b", restarted(running("", idB), exit(139, dumpedAt.Add(-time.Hour))))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"},
				message: []string{"dump time is unknown, so that is no evidence"}},
		},
		{
			name:  "db-0: signal unknown, terminations are no evidence",
			crash: noSignal(crash("", "db-0", "postgres")),
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				db0("team-b", restarted(running("", idB), exit(139, dumpedAt)))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"},
				message: []string{"signal is unknown"}},
		},
		{
			name:  "db-0: the executable tells two pods apart",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				pod("team-b", "db-0", containers([]corev1.Container{{Name: "redis", Image: "redis:7"}}, running("redis", idB)))},
			want: want{pod: "team-a/db-0", container: "postgres", by: coredogv1.ResolvedByHostname,
				message: []string{`executable "postgres" matches the command or image of team-a/db-0/postgres`}},
		},
		{
			name:  "db-0: a pod started after the dump is a successor, ruled out",
			crash: crash("", "db-0", "postgres"),
			pods:  []corev1.Pod{db0("team-a", running("", idA), startedAt(dumpedAt.Add(5*time.Minute))), db0("team-b", running("", idB))},
			want: want{pod: "team-b/db-0", container: "postgres", by: coredogv1.ResolvedByHostname,
				message: []string{"ruled out: team-a/db-0 (started at"}},
		},
		{
			name:  "db-0: a container that finished before the dump is ruled out",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", terminated(running("", idA), exit(0, dumpedAt.Add(-time.Hour)))),
				db0("team-b", running("", idB))},
			want: want{pod: "team-b/db-0", container: "postgres", by: coredogv1.ResolvedByHostname,
				message: []string{"team-a/db-0/postgres (finished at"}},
		},
		{
			name:  "db-0: everything ruled out",
			crash: crash("", "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", terminated(running("", idA), exit(0, dumpedAt.Add(-time.Hour)))),
				db0("team-b", running("", idB), startedAt(dumpedAt.Add(time.Hour)))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0", "team-b/db-0"},
				message: []string{"no container left"}},
		},
		{
			name:  "db-0: ruling out needs the dump time",
			crash: noTime(crash("", "db-0", "postgres")),
			pods: []corev1.Pod{db0("team-a", terminated(running("", idA), exit(0, dumpedAt.Add(-time.Hour)))),
				db0("team-b", running("", idB))},
			want: want{by: coredogv1.ResolvedByUnresolved, candidates: []string{"team-a/db-0/postgres", "team-b/db-0/postgres"}},
		},

		// Rule 3 within one pod.
		{
			name:  "multi-container: executable is the command's base name",
			crash: crash("", "web-1", "checkout-server"),
			pods:  []corev1.Pod{web()},
			want:  want{pod: "shop/web-1", container: "app", by: coredogv1.ResolvedByHostname, image: "example.com/app:1"},
		},
		{
			name:  "multi-container: executable is the image's name",
			crash: crash("", "web-1", "envoy"),
			pods:  []corev1.Pod{web()},
			want:  want{pod: "shop/web-1", container: "proxy", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "multi-container: executable is args[0] behind an init wrapper, cut to 15 bytes",
			crash: crash("", "web-1", "queue-consumer-"),
			pods:  []corev1.Pod{web()},
			want:  want{pod: "shop/web-1", container: "worker", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "multi-container: comm of the command cut to 15 bytes",
			crash: crash("", "web-1", "checkout-server"[:15]),
			pods: []corev1.Pod{web(func(p *corev1.Pod) {
				p.Spec.Containers[0].Command = []string{"/usr/local/bin/checkout-server-v2"}
			})},
			want: want{pod: "shop/web-1", container: "app", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "multi-container: a shorter name is not a prefix match",
			crash: crash("", "web-1", "checkout-serv"),
			pods:  []corev1.Pod{web()},
			want: want{pod: "shop/web-1", container: "", by: coredogv1.ResolvedByHostname,
				candidates: []string{"shop/web-1/app", "shop/web-1/proxy", "shop/web-1/worker"}},
		},
		{
			name:  "multi-container: no evidence records the pod without a container",
			crash: crash("", "web-1", "sh"),
			pods:  []corev1.Pod{web()},
			want: want{pod: "shop/web-1", container: "", by: coredogv1.ResolvedByHostname,
				candidates: []string{"shop/web-1/app", "shop/web-1/proxy", "shop/web-1/worker"},
				message:    []string{"container could not be determined"}},
		},
		{
			name:  "multi-container: termination picks the container",
			crash: crash("", "web-1", "sh"),
			pods:  []corev1.Pod{web(status(restarted(running("proxy", idB), exit(139, dumpedAt.Add(time.Second)))))},
			want:  want{pod: "shop/web-1", container: "proxy", by: coredogv1.ResolvedByTermination},
		},
		{
			name:  "multi-container: an executable two containers run leaves the container open",
			crash: crash("", "web-1", "python3"),
			pods: []corev1.Pod{pod("shop", "web-1", containers(
				[]corev1.Container{{Name: "api", Image: "python3:3.12"}, {Name: "jobs", Image: "python3:3.12"}},
				running("api", idA), running("jobs", idB)))},
			want: want{pod: "shop/web-1", container: "", by: coredogv1.ResolvedByHostname,
				candidates: []string{"shop/web-1/api", "shop/web-1/jobs"}},
		},
		{
			name:  "init container that completed before the dump leaves one container",
			crash: crash("", "web", ""),
			pods: []corev1.Pod{pod("team-a", "web", initContainer(corev1.Container{Name: "wait-for-db", Image: "busybox"},
				terminated(running("wait-for-db", ""), corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: metav1.NewTime(dumpedAt.Add(-time.Hour))})))},
			want: want{pod: "team-a/web", container: "app", by: coredogv1.ResolvedByHostname,
				message: []string{"team-a/web/wait-for-db (finished at"}},
		},
		{
			name:  "init container with the dump time unknown is still a candidate",
			crash: noTime(crash("", "web", "")),
			pods: []corev1.Pod{pod("team-a", "web", initContainer(corev1.Container{Name: "wait-for-db", Image: "busybox"},
				terminated(running("wait-for-db", ""), corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", FinishedAt: metav1.NewTime(dumpedAt.Add(-time.Hour))})))},
			want: want{pod: "team-a/web", container: "", by: coredogv1.ResolvedByHostname,
				candidates: []string{"team-a/web/app", "team-a/web/wait-for-db"}},
		},

		// Nodes.
		{
			name:  "pods on other nodes are ignored",
			crash: crash("containerd://"+idB, "db-0", "postgres"),
			pods: []corev1.Pod{db0("team-a", running("", idA)),
				db0("team-b", restarted(running("", idB), exit(139, dumpedAt)), node("node-2"))},
			want: want{pod: "team-a/db-0", container: "postgres", by: coredogv1.ResolvedByHostname},
		},
		{
			name:  "a crash without a node matches nothing",
			crash: Crash{ContainerID: "containerd://" + idA, Hostname: "web"},
			pods:  []corev1.Pod{pod("team-a", "web", status(running("app", idA)), node(""))},
			want:  want{by: coredogv1.ResolvedByUnresolved, message: []string{"names no node"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			window := tc.window
			if window == 0 {
				window = 30 * time.Second
			}
			got := Resolve(tc.crash, tc.pods, window)
			checkResult(t, got, tc.want)
		})
	}
}

func checkResult(t *testing.T, got Result, w want) {
	t.Helper()
	t.Logf("message: %s", got.Message)
	gotPod := ""
	if got.Pod != nil {
		gotPod = got.Pod.Namespace + "/" + got.Pod.Name
	}
	if gotPod != w.pod || got.Container != w.container || got.ResolvedBy != w.by {
		t.Errorf("got pod %q container %q by %s, want pod %q container %q by %s\nmessage: %s",
			gotPod, got.Container, got.ResolvedBy, w.pod, w.container, w.by, got.Message)
	}
	if w.image != "" && got.Image != w.image {
		t.Errorf("image = %q, want %q", got.Image, w.image)
	}
	if w.imageID != "" && got.ImageID != w.imageID {
		t.Errorf("imageID = %q, want %q", got.ImageID, w.imageID)
	}
	if !slices.Equal(got.Candidates, w.candidates) {
		t.Errorf("candidates = %q, want %q", got.Candidates, w.candidates)
	}
	if got.Message == "" {
		t.Errorf("empty message")
	}
	for _, s := range w.message {
		if !strings.Contains(got.Message, s) {
			t.Errorf("message %q does not contain %q", got.Message, s)
		}
	}
}

// The caller's pods must come back untouched, and the result's pod must not
// alias them (the reconciler may change it).
func TestResolveDoesNotAliasPods(t *testing.T) {
	pods := []corev1.Pod{pod("team-a", "web", status(running("app", idA)))}
	got := Resolve(Crash{NodeName: testNode, ContainerID: idA}, pods, time.Minute)
	if got.Pod == nil {
		t.Fatalf("unresolved: %s", got.Message)
	}
	got.Pod.Labels = map[string]string{"x": "y"}
	if pods[0].Labels != nil {
		t.Errorf("result's pod aliases the input")
	}
}

func TestContainerIDKey(t *testing.T) {
	cases := []struct{ in, want string }{
		{"containerd://" + idA, idA},
		{"cri-o://" + idA, idA},
		{"docker://" + strings.ToUpper(idA), idA},
		{" " + idA + " ", idA},
		{idA, idA},
		{"containerd://", ""},
		{"", ""},
	}
	for _, tc := range cases {
		if got := containerIDKey(tc.in); got != tc.want {
			t.Errorf("containerIDKey(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestImageName(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres", "postgres"},
		{"postgres:16", "postgres"},
		{"docker.io/library/postgres:16", "postgres"},
		{"registry.example.com:5000/team/app", "app"},
		{"registry.example.com:5000/team/app:1.2@sha256:abc", "app"},
		{"ghcr.io/org/tool@sha256:abc", "tool"},
		{"", ""},
	}
	for _, tc := range cases {
		if got := imageName(tc.in); got != tc.want {
			t.Errorf("imageName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestKubeletHostname(t *testing.T) {
	cases := []struct{ in, want string }{
		{"web-1", "web-1"},
		{strings.Repeat("a", 63), strings.Repeat("a", 63)},
		{strings.Repeat("a", 64), strings.Repeat("a", 63)},
		{strings.Repeat("a", 62) + "-b", strings.Repeat("a", 62)},
		{strings.Repeat("a", 61) + ".-b", strings.Repeat("a", 61)},
	}
	for _, tc := range cases {
		if got := kubeletHostname(tc.in); got != tc.want {
			t.Errorf("kubeletHostname(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzResolve feeds the node's strings, which come from file names and
// cgroup paths, into Resolve: it must not panic, and never name a pod when
// it says Unresolved.
func FuzzResolve(f *testing.F) {
	f.Add("containerd://"+idA, "db-0", "postgres", 11, int64(0))
	f.Add("", strings.Repeat("a", 70), "queue-consumer-", 6, int64(5))
	f.Add("://", "", "/", -1, int64(-3))
	pods := []corev1.Pod{
		db0("team-a", restarted(running("", idA), exit(139, dumpedAt))),
		db0("team-b", running("", idB)),
		web(),
		pod("team-a", strings.Repeat("a", 70)),
	}
	f.Fuzz(func(t *testing.T, id, host, exe string, signal int, offsetSeconds int64) {
		c := Crash{NodeName: testNode, ContainerID: id, Hostname: host, Executable: exe, Signal: signal,
			DumpedAt: dumpedAt.Add(time.Duration(offsetSeconds) * time.Second)}
		got := Resolve(c, pods, time.Minute)
		if (got.ResolvedBy == coredogv1.ResolvedByUnresolved) != (got.Pod == nil) {
			t.Errorf("resolvedBy %s with pod %v", got.ResolvedBy, got.Pod != nil)
		}
		if got.ResolvedBy == coredogv1.ResolvedByContainerID && got.Container == "" {
			t.Errorf("resolved by container ID without a container")
		}
		if got.Message == "" {
			t.Errorf("empty message")
		}
	})
}
