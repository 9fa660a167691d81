package podresolve

import (
	"fmt"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// commLen is the length of the kernel's comm (TASK_COMM_LEN 16, less the
// NUL): the executable name in a core's file name and notes is cut to it.
const commLen = 15

// candidate is one container of one pod that may have dumped core.
type candidate struct {
	pod     *corev1.Pod
	name    string
	image   string   // from the spec
	command []string // from the spec
	args    []string // from the spec
	status  *corev1.ContainerStatus
}

// String is how a candidate is named to people: namespace/pod/container.
func (c candidate) String() string { return podKey(c.pod) + "/" + c.name }

func podKey(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// containersOf lists every container of pod: init (including sidecars),
// regular and ephemeral, since all of them share the pod's hostname.
func containersOf(pod *corev1.Pod) []candidate {
	var out []candidate
	add := func(name, image string, command, args []string, statuses []corev1.ContainerStatus) {
		c := candidate{pod: pod, name: name, image: image, command: command, args: args}
		for i := range statuses {
			if statuses[i].Name == name {
				c.status = &statuses[i]
				break
			}
		}
		out = append(out, c)
	}
	for _, c := range pod.Spec.InitContainers {
		add(c.Name, c.Image, c.Command, c.Args, pod.Status.InitContainerStatuses)
	}
	for _, c := range pod.Spec.Containers {
		add(c.Name, c.Image, c.Command, c.Args, pod.Status.ContainerStatuses)
	}
	for _, c := range pod.Spec.EphemeralContainers {
		add(c.Name, c.Image, c.Command, c.Args, pod.Status.EphemeralContainerStatuses)
	}
	return out
}

// podStartedAfter says why pod cannot hold a process that dumped at
// dumpedAt, or "" when it may: a pod the kubelet started after the dump is a
// successor that took the hostname over (a StatefulSet pod recreated).
func podStartedAfter(pod *corev1.Pod, dumpedAt time.Time, window time.Duration) string {
	if dumpedAt.IsZero() || pod.Status.StartTime == nil {
		return ""
	}
	if st := pod.Status.StartTime.Time; st.After(dumpedAt.Add(window)) {
		return fmt.Sprintf("started at %s, after the dump", st.UTC().Format(time.RFC3339))
	}
	return ""
}

// finishedBefore says why container c cannot have dumped at dumpedAt, or ""
// when it may: its current state is terminated and it ended before the dump.
// Only the current state counts; a last termination says nothing about the
// instance running now.
func finishedBefore(c candidate, dumpedAt time.Time, window time.Duration) string {
	if dumpedAt.IsZero() || c.status == nil || c.status.State.Terminated == nil {
		return ""
	}
	t := c.status.State.Terminated.FinishedAt
	if t.IsZero() || !t.Time.Before(dumpedAt.Add(-window)) {
		return ""
	}
	return fmt.Sprintf("finished at %s, before the dump", t.UTC().Format(time.RFC3339))
}

// killedBy reports whether a termination is the crash's: exit code 128+signal
// (how runtimes and shells report a death by signal) or the signal itself.
// A reason such as "Error" or "OOMKilled" is not evidence: it does not name
// the signal.
func killedBy(t *corev1.ContainerStateTerminated, signal int) bool {
	return t != nil && signal > 0 && (int(t.ExitCode) == 128+signal || int(t.Signal) == signal)
}

// terminatedNear reports whether container c terminated by signal within
// window of dumpedAt, in its current or its last state (a crashed container
// is restarted, and the crash moves to lastState). With dumpedAt unknown it
// reports whether any such termination exists at all; the caller treats that
// as weak evidence.
func terminatedNear(c candidate, signal int, dumpedAt time.Time, window time.Duration) bool {
	if c.status == nil {
		return false
	}
	for _, t := range []*corev1.ContainerStateTerminated{c.status.State.Terminated, c.status.LastTerminationState.Terminated} {
		if !killedBy(t, signal) {
			continue
		}
		if dumpedAt.IsZero() {
			return true
		}
		if !t.FinishedAt.IsZero() && absDuration(t.FinishedAt.Sub(dumpedAt)) <= window {
			return true
		}
	}
	return false
}

func absDuration(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// runsExecutable reports whether container c is declared to run exe: the
// base name of command[0], of args[0] (images whose entrypoint is a wrapper
// such as tini take the program as the first argument), or the image's
// repository name. exe may be the kernel's comm, cut to 15 bytes, so names are
// compared on their first 15 bytes.
func runsExecutable(c candidate, exe string) bool {
	exe = commPrefix(path.Base(exe))
	if exe == "" || exe == "." || exe == "/" {
		return false
	}
	names := []string{imageName(c.image)}
	if len(c.command) > 0 {
		names = append(names, path.Base(c.command[0]))
	}
	if len(c.args) > 0 {
		names = append(names, path.Base(c.args[0]))
	}
	if c.status != nil {
		names = append(names, imageName(c.status.Image))
	}
	for _, n := range names {
		if n != "" && commPrefix(n) == exe {
			return true
		}
	}
	return false
}

func commPrefix(s string) string {
	if len(s) > commLen {
		return s[:commLen]
	}
	return s
}

// imageName returns the last path element of an image's repository, without
// registry, tag or digest: "docker.io/library/postgres:16" → "postgres",
// "registry:5000/team/app@sha256:…" → "app".
func imageName(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	// After the last '/', a ':' can only start a tag (a registry port comes
	// before a '/').
	if i := strings.IndexByte(ref, ':'); i >= 0 {
		ref = ref[:i]
	}
	return ref
}
