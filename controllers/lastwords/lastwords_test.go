package lastwords

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var (
	t0    = time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)
	idA   = "containerd://" + strings.Repeat("a", 64)
	idB   = "containerd://" + strings.Repeat("b", 64)
	idOld = "containerd://" + strings.Repeat("c", 64)
)

func term(id string, code int32, at time.Time) *corev1.ContainerStateTerminated {
	return &corev1.ContainerStateTerminated{ContainerID: id, ExitCode: code, FinishedAt: metav1.NewTime(at)}
}

func TestChoose(t *testing.T) {
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	for name, tc := range map[string]struct {
		st    *corev1.ContainerStatus
		crash Crash
		want  Run
	}{
		"no status": {nil, Crash{ContainerID: idA}, RunNone},
		"by ID: restarted since": {&corev1.ContainerStatus{ContainerID: idB, State: running,
			LastTerminationState: corev1.ContainerState{Terminated: term(idA, 139, t0)}}, Crash{ContainerID: idA}, RunPrevious},
		"by ID: terminated, not restarted": {&corev1.ContainerStatus{ContainerID: idA,
			State: corev1.ContainerState{Terminated: term(idA, 139, t0)}}, Crash{ContainerID: idA}, RunCurrent},
		"by ID: still running (a child crashed)": {&corev1.ContainerStatus{ContainerID: idA, State: running},
			Crash{ContainerID: "cri-o://" + strings.Repeat("A", 64)}, RunCurrent},
		"by ID: two restarts since, log gone": {&corev1.ContainerStatus{ContainerID: idB, State: running,
			LastTerminationState: corev1.ContainerState{Terminated: term(idOld, 139, t0)}}, Crash{ContainerID: idA}, RunNone},
		"no ID: terminated by the signal": {&corev1.ContainerStatus{State: corev1.ContainerState{Terminated: term(idA, 139, t0)}},
			Crash{Signal: 11, DumpedAt: t0}, RunCurrent},
		"no ID: restarted after the signal": {&corev1.ContainerStatus{State: running,
			LastTerminationState: corev1.ContainerState{Terminated: term(idA, 139, t0.Add(time.Second))}}, Crash{Signal: 11, DumpedAt: t0}, RunPrevious},
		"no ID: waiting in back-off": {&corev1.ContainerStatus{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}},
			LastTerminationState: corev1.ContainerState{Terminated: term(idA, 139, t0)}}, Crash{Signal: 11}, RunPrevious},
		"no ID: last termination another signal": {&corev1.ContainerStatus{State: running,
			LastTerminationState: corev1.ContainerState{Terminated: term(idA, 137, t0)}}, Crash{Signal: 11, DumpedAt: t0}, RunNone},
		"no ID: last termination long before": {&corev1.ContainerStatus{State: running,
			LastTerminationState: corev1.ContainerState{Terminated: term(idA, 139, t0.Add(-time.Hour))}}, Crash{Signal: 11, DumpedAt: t0}, RunNone},
		"no ID: running, never terminated": {&corev1.ContainerStatus{State: running}, Crash{Signal: 11}, RunCurrent},
		"no ID: current terminated otherwise": {&corev1.ContainerStatus{State: corev1.ContainerState{Terminated: term(idA, 0, t0)},
			LastTerminationState: corev1.ContainerState{Terminated: term(idOld, 139, t0)}}, Crash{Signal: 11, DumpedAt: t0}, RunNone},
	} {
		t.Run(name, func(t *testing.T) {
			got, why := Choose(tc.st, tc.crash)
			if got != tc.want || why == "" {
				t.Errorf("Choose = %q (%s), want %q", got, why, tc.want)
			}
		})
	}
}

func TestSnapshotRedacts(t *testing.T) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", UID: "u1", Annotations: map[string]string{
			"kubectl.kubernetes.io/last-applied-configuration": "S1", "vault.example/auth-token": "S2", "team": "payments",
		}, ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: "init", Env: []corev1.EnvVar{{Name: "X", Value: "S3"}}}},
			Containers: []corev1.Container{{
				Name: "app", Command: []string{"/app", "--token", "S4", "--api-key=S5", "--port=80", "-v"},
				Env: []corev1.EnvVar{{Name: "PLAIN", Value: "S6"}, {Name: "FROM", ValueFrom: &corev1.EnvVarSource{
					SecretKeyRef: &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: "sec"}, Key: "k"}}}},
				LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					HTTPHeaders: []corev1.HTTPHeader{{Name: "Authorization", Value: "S7"}}}}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"check", "--password=S8"}}}},
			}},
			EphemeralContainers: []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{
				Name: "dbg", Env: []corev1.EnvVar{{Name: "Y", Value: "S9"}}}}},
		},
	}
	orig := pod.DeepCopy()
	snap := Snapshot(pod)
	b, err := jsonOf(snap)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"S1"`, `"S2"`, `"S3"`, `"S4"`, "S5", `"S6"`, `"S7"`, "S8", `"S9"`, "managedFields"} {
		if strings.Contains(b, s) {
			t.Errorf("snapshot keeps %s: %s", s, b)
		}
	}
	for _, s := range []string{`"payments"`, `"--port=80"`, `"-v"`, `"--api-key=(redacted)"`, `"sec"`, `"Authorization"`} {
		if !strings.Contains(b, s) {
			t.Errorf("snapshot lost %s: %s", s, b)
		}
	}
	if pod.Spec.Containers[0].Env[0].Value != orig.Spec.Containers[0].Env[0].Value || pod.Annotations["team"] != "payments" {
		t.Error("Snapshot changed the pod it was given")
	}
}

// logSource serves canned logs and restarts the container in the fake
// client after each request, as many times as restarts says.
type logSource struct {
	c        client.Client
	restarts int
	reqs     []LogRequest
	err      error
}

func (l *logSource) Log(ctx context.Context, r LogRequest) ([]byte, error) {
	l.reqs = append(l.reqs, r)
	if l.err != nil {
		return nil, l.err
	}
	if len(l.reqs) <= l.restarts {
		var pod corev1.Pod
		if err := l.c.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: r.Pod}, &pod); err != nil {
			return nil, err
		}
		st := &pod.Status.ContainerStatuses[0]
		st.RestartCount++
		st.LastTerminationState.Terminated = term(st.ContainerID, 139, t0)
		st.ContainerID = idB
		if err := l.c.Status().Update(ctx, &pod); err != nil {
			return nil, err
		}
	}
	if r.Previous {
		return []byte("previous run\n"), nil
	}
	return []byte("current run\n"), nil
}

func podWith(st corev1.ContainerStatus) *corev1.Pod {
	st.Name = "app"
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "n", UID: "u1"},
		Spec:   corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{st}}}
}

func TestGather(t *testing.T) {
	now := func() time.Time { return t0 }
	target := Target{Namespace: "n", Pod: "p", UID: "u1", Container: "app", Crash: Crash{ContainerID: idA, Signal: 11}}
	terminated := corev1.ContainerStatus{ContainerID: idA, State: corev1.ContainerState{Terminated: term(idA, 139, t0)}}
	for name, tc := range map[string]struct {
		st       corev1.ContainerStatus
		target   Target
		restarts int
		err      error
		wantRun  Run
		wantLog  string
		wantReqs int
	}{
		"not restarted: current":                          {terminated, target, 0, nil, RunCurrent, "current run\n", 1},
		"restarted during the read: read again, previous": {terminated, target, 1, nil, RunPrevious, "previous run\n", 2},
		"restarting all the time: nothing":                {terminated, target, 10, nil, RunNone, "", maxTries},
		"kubelet unreachable":                             {terminated, target, 0, errors.New("dial tcp: refused"), RunNone, "", 1},
		"container unknown":                               {terminated, Target{Namespace: "n", Pod: "p", UID: "u1"}, 0, nil, RunNone, "", 0},
		"pod replaced":                                    {terminated, Target{Namespace: "n", Pod: "p", UID: "u0", Container: "app"}, 0, nil, RunNone, "", 0},
	} {
		t.Run(name, func(t *testing.T) {
			c := fake.NewClientBuilder().WithObjects(podWith(tc.st)).Build()
			src := &logSource{c: c, restarts: tc.restarts, err: tc.err}
			rec := Gather(context.Background(), c, src, tc.target, now)
			if rec.Info.Run != tc.wantRun || string(rec.Log) != tc.wantLog || len(src.reqs) != tc.wantReqs {
				t.Errorf("Gather: run %q log %q after %d requests (%s); want %q %q after %d",
					rec.Info.Run, rec.Log, len(src.reqs), rec.Info.Note, tc.wantRun, tc.wantLog, tc.wantReqs)
			}
			if rec.Info.Note == "" {
				t.Error("no note")
			}
			if tc.target.UID == "u1" && (rec.Pod == nil || rec.Pod.UID != types.UID("u1")) {
				t.Errorf("no snapshot of the pod: %+v", rec.Pod)
			}
		})
	}
}
