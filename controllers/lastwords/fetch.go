package lastwords

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/internal/storage"
)

// Bounds of a stored log: the last MaxLines lines, at most MaxBytes bytes
// (whichever is smaller), as the kubelet's tailLines and limitBytes; what
// the kubelet sends is cut at MaxBytes again here.
const (
	MaxLines = 200
	MaxBytes = storage.MaxLogBytes
)

// fetchTimeout bounds one log request: the API server proxies it to the
// node's kubelet, which may be gone with the node.
const fetchTimeout = 10 * time.Second

// maxTries bounds the reads of a log whose container restarted between the
// status read and the log request.
const maxTries = 3

// LogRequest is one pods/log request.
type LogRequest struct {
	Namespace, Pod, Container string
	Previous                  bool
}

// LogSource reads a container's log: the API server's pods/log subresource
// (KubeLogs), or a double in tests.
type LogSource interface {
	Log(ctx context.Context, r LogRequest) ([]byte, error)
}

// KubeLogs reads logs through the API server, which asks the node's kubelet.
type KubeLogs struct {
	Client kubernetes.Interface
}

var _ LogSource = KubeLogs{}

// Log asks for the last MaxLines lines and at most MaxBytes bytes of the
// log, and reads at most MaxBytes whatever comes.
func (k KubeLogs) Log(ctx context.Context, r LogRequest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	rc, err := k.Client.CoreV1().Pods(r.Namespace).GetLogs(r.Pod, &corev1.PodLogOptions{
		Container:  r.Container,
		Previous:   r.Previous,
		TailLines:  ptr.To[int64](MaxLines),
		LimitBytes: ptr.To[int64](MaxBytes),
	}).Stream(ctx)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, MaxBytes))
}

// Target is the crashed container, as the CoreDump's status resolved it.
type Target struct {
	Namespace, Pod, UID, Container string
	Crash                          Crash
}

// Record is what Gather found.
type Record struct {
	// Pod is the redacted snapshot of the pod; nil when it was not read.
	Pod *corev1.Pod `json:"pod,omitempty"`
	// Log is the crashed run's log, at most MaxBytes; nil when none was read.
	Log []byte `json:"-"`
	// Info says which log was read, or why none.
	Info LogInfo `json:"log"`
}

// LogInfo describes the stored log in the metadata document.
type LogInfo struct {
	Container string `json:"container,omitempty"`
	// Run is "current" or "previous"; empty when no log was read.
	Run Run `json:"run,omitempty"`
	// Bytes is the stored log's size.
	Bytes int `json:"bytes"`
	// Note says why this run was chosen, or why there is no log.
	Note string `json:"note,omitempty"`
	// FetchedAt is when the log was read.
	FetchedAt *time.Time `json:"fetchedAt,omitempty"`
}

// Gather reads the pod (from the API server, not a cache: its status is
// what decides the run), snapshots it, and fetches the crashed run's log.
// It never fails: what could not be had is said in Info.Note. A container
// that restarts between the status read and the log request would make the
// kubelet answer with another run's log; the status is read again after
// each request, and the log kept only if the run it names is unchanged.
func Gather(ctx context.Context, pods client.Reader, logs LogSource, t Target, now func() time.Time) *Record {
	rec := &Record{Info: LogInfo{Container: t.Container}}
	if t.Pod == "" {
		rec.Info.Note = "the dump's pod is unknown"
		return rec
	}
	var chosen Run
	var mark string
	for try := 0; ; try++ {
		pod, err := readPod(ctx, pods, t)
		if err != nil {
			rec.Info.Note = err.Error()
			return rec
		}
		if try == 0 {
			rec.Pod = Snapshot(pod)
		}
		if chosen != "" {
			if instance(Status(pod, t.Container), chosen) == mark {
				return rec
			}
			rec.Log, rec.Info.Run, rec.Info.Bytes, rec.Info.FetchedAt = nil, RunNone, 0, nil
			if try >= maxTries {
				rec.Info.Note = "the container kept restarting while its log was read; no log is kept"
				return rec
			}
		}
		if t.Container == "" {
			rec.Info.Note = "the crashed container of the pod is unknown"
			return rec
		}
		st := Status(pod, t.Container)
		run, why := Choose(st, t.Crash)
		rec.Info.Note = why
		if run == RunNone {
			return rec
		}
		chosen, mark = run, instance(st, run)
		log, err := logs.Log(ctx, LogRequest{Namespace: t.Namespace, Pod: t.Pod, Container: t.Container, Previous: run == RunPrevious})
		if err != nil {
			rec.Info.Note = fmt.Sprintf("reading the %s log of container %s failed: %v", run, t.Container, err)
			return rec
		}
		at := now().UTC()
		rec.Log, rec.Info.Run, rec.Info.Bytes, rec.Info.FetchedAt = log, run, len(log), &at
	}
}

// errPodReplaced: a pod of the same name, but not the one that crashed.
var errPodReplaced = errors.New("the pod was replaced since the crash")

func readPod(ctx context.Context, pods client.Reader, t Target) (*corev1.Pod, error) {
	var pod corev1.Pod
	if err := pods.Get(ctx, client.ObjectKey{Namespace: t.Namespace, Name: t.Pod}, &pod); err != nil {
		return nil, fmt.Errorf("reading pod %s/%s: %w", t.Namespace, t.Pod, err)
	}
	if t.UID != "" && string(pod.UID) != t.UID {
		return nil, fmt.Errorf("pod %s/%s: %w", t.Namespace, t.Pod, errPodReplaced)
	}
	return &pod, nil
}
