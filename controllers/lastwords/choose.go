package lastwords

import (
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Run says which run of a container a log request reads.
type Run string

const (
	// RunNone: no log is fetched; the reason says why.
	RunNone Run = ""
	// RunCurrent: the container's current (or last, when it has not
	// restarted) run, kubectl logs without --previous.
	RunCurrent Run = "current"
	// RunPrevious: the run before the current one, kubectl logs --previous.
	RunPrevious Run = "previous"
)

// Crash is what is known of the crashed run.
type Crash struct {
	// ContainerID is the runtime's ID of the crashed container, "" when
	// the agent could not read it.
	ContainerID string
	// Signal that killed the process, 0 when unknown.
	Signal int
	// DumpedAt is when the core was written; zero when unknown.
	DumpedAt time.Time
}

// Window is how far apart a dump and a container's termination may be and
// still be one event (as podresolve's).
const Window = 2 * time.Minute

// Choose decides whose log holds the crashed run's last words, from the
// container's status as the API server has it. The kubelet answers a log
// request from the same status: --previous is the last termination's
// container, the current log that of the running or last terminated one.
//
// With the crashed container's ID the choice is exact: the last
// termination's ID means previous, the current ID means current (the
// container has not restarted yet, or a process other than its main one
// crashed and it runs on), and neither means the crash is two or more runs
// back and its log is gone. Without an ID, a termination by the crash's
// signal (exit code 128+signal) within Window of the dump names the run:
// the current state's means current, the last state's previous; a running
// container without such evidence is read current only when it has never
// terminated (a child process crashed).
func Choose(st *corev1.ContainerStatus, c Crash) (Run, string) {
	if st == nil {
		return RunNone, "the pod's status does not list the container"
	}
	last := st.LastTerminationState.Terminated
	cur := st.State.Terminated
	if id := idKey(c.ContainerID); id != "" {
		switch {
		case last != nil && idKey(last.ContainerID) == id:
			return RunPrevious, "the container restarted since the crash"
		case idKey(st.ContainerID) == id || cur != nil && idKey(cur.ContainerID) == id:
			return RunCurrent, "the crashed container has not restarted"
		}
		return RunNone, "the crashed container is neither the current nor the previous run: it restarted more than once since, and the kubelet keeps only the last two logs"
	}
	switch {
	case cur != nil && byCrash(cur, c):
		return RunCurrent, "the container terminated by the crash's signal and has not restarted"
	case cur == nil && last != nil && byCrash(last, c):
		return RunPrevious, "the container's last termination was by the crash's signal; it restarted since"
	case cur == nil && last == nil && st.State.Running != nil:
		return RunCurrent, "the container runs and never terminated: a process other than its main one crashed"
	}
	return RunNone, "no run of the container ended by the crash's signal near the dump's time, and the dump has no container ID"
}

// byCrash says whether a termination is the crash's: by its signal, and
// near its time when both are known.
func byCrash(t *corev1.ContainerStateTerminated, c Crash) bool {
	if c.Signal <= 0 || (t.ExitCode != int32(128+c.Signal) && t.Signal != int32(c.Signal)) {
		return false
	}
	if c.DumpedAt.IsZero() || t.FinishedAt.IsZero() {
		return true
	}
	d := t.FinishedAt.Sub(c.DumpedAt)
	return d.Abs() <= Window
}

// idKey is a container ID without its runtime prefix, lower case.
func idKey(id string) string {
	if _, rest, ok := strings.Cut(id, "://"); ok {
		id = rest
	}
	return strings.ToLower(strings.TrimSpace(id))
}

// Status finds a container's status in pod, init and ephemeral ones included.
func Status(pod *corev1.Pod, container string) *corev1.ContainerStatus {
	for _, list := range [][]corev1.ContainerStatus{pod.Status.ContainerStatuses, pod.Status.InitContainerStatuses, pod.Status.EphemeralContainerStatuses} {
		for i := range list {
			if list[i].Name == container {
				return &list[i]
			}
		}
	}
	return nil
}

// instance names the container run a choice points at, so that a later
// read of the status can tell whether it still does.
func instance(st *corev1.ContainerStatus, r Run) string {
	if st == nil {
		return ""
	}
	switch r {
	case RunPrevious:
		if t := st.LastTerminationState.Terminated; t != nil {
			return fmt.Sprintf("%d/%s@%s", st.RestartCount, t.ContainerID, t.FinishedAt.UTC().Format(time.RFC3339))
		}
	case RunCurrent:
		id := st.ContainerID
		if t := st.State.Terminated; t != nil && t.ContainerID != "" {
			id = t.ContainerID
		}
		return fmt.Sprintf("%d/%s", st.RestartCount, id)
	}
	return ""
}
