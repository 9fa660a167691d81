package cli

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// now is the tests' clock.
var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// dumpOpt changes a test dump.
type dumpOpt func(*coredogv1.CoreDump)

// testDump is an uploaded SIGSEGV dump of team-a/web-0 (StatefulSet web)
// that crashed at now-d.
func testDump(name string, ago time.Duration, opts ...dumpOpt) coredogv1.CoreDump {
	at := metav1.NewTime(now.Add(-ago))
	cd := coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "coredog-system", CreationTimestamp: at},
		Spec: coredogv1.CoreDumpSpec{
			PolicyName: "default", NodeName: "node-1", FileName: "core.web-0.server.1.11.0",
			Size: 43 << 20, DisplaySize: "43Mi", DetectedAt: at, DetectedBy: coredogv1.DetectedByWatch,
			Process: coredogv1.ProcessInfo{
				Executable: "server", PID: 1, HostPID: 4242,
				Signal: 11, SignalName: "SIGSEGV", DumpedAt: &at,
			},
			ELF: &coredogv1.ELFInfo{
				Machine: "x86_64", Threads: 4, FaultAddress: "0x0", CrashModule: "/usr/bin/server",
				CrashOffset: "0x1a2b", BuildID: "deadbeef",
			},
			Signature: "0123456789ab",
		},
		Status: coredogv1.CoreDumpStatus{
			Phase: coredogv1.PhaseUploaded,
			Pod: &coredogv1.PodReference{
				Namespace: "team-a", Name: "web-0", UID: "uid-1", Container: "app",
				Image: "registry.example/web:1.2", ImageID: "registry.example/web@sha256:" + sha64,
				WorkloadKind: "StatefulSet", WorkloadName: "web", ResolvedBy: coredogv1.ResolvedByContainerID,
			},
			Storage: &coredogv1.StorageStatus{
				URL: "s3://cores/prod/team-a/web-0/" + name + ".zst", Key: "prod/team-a/web-0/" + name + ".zst",
				Compression: coredogv1.CompressionZstd, StoredSize: 5 << 20,
				SHA256: "aa", UploadedAt: &at,
			},
			Attempts: 1,
		},
	}
	for _, o := range opts {
		o(&cd)
	}
	return cd
}

const sha64 = "1111111111111111111111111111111111111111111111111111111111111111"

func withPod(ns, name, kind, wl string) dumpOpt {
	return func(cd *coredogv1.CoreDump) {
		if name == "" {
			cd.Status.Pod = nil
			return
		}
		cd.Status.Pod.Namespace, cd.Status.Pod.Name = ns, name
		cd.Status.Pod.WorkloadKind, cd.Status.Pod.WorkloadName = kind, wl
	}
}

func withSignal(n int32, name string) dumpOpt {
	return func(cd *coredogv1.CoreDump) { cd.Spec.Process.Signal, cd.Spec.Process.SignalName = n, name }
}

func withSignature(s string) dumpOpt {
	return func(cd *coredogv1.CoreDump) { cd.Spec.Signature = s }
}

func withPhase(p coredogv1.Phase, reason, msg string) dumpOpt {
	return func(cd *coredogv1.CoreDump) {
		cd.Status.Phase, cd.Status.Reason, cd.Status.Message = p, reason, msg
		if p != coredogv1.PhaseUploaded {
			cd.Status.Storage = nil
		}
	}
}
