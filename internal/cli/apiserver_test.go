package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/scheme"
)

// TestAgainstAPIServer runs the commands, as the binary does, against a
// real kube-apiserver with CoreDumps, a policy whose storage is a file://
// directory holding real zstd objects, an agent Lease and events.
func TestAgainstAPIServer(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, which builds the envtest binaries (hack/envtest.sh)")
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	k8s, err := client.New(cfg, client.Options{Scheme: scheme.New()})
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	admin := kubeconfigFor(t, env, tmp, envtest.User{Name: "admin", Groups: []string{"system:masters"}})

	// Storage: a file:// bucket with one good object, also used by the dump whose checksum is wrong.
	store := filepath.Join(tmp, "store")
	dump := bytes.Repeat([]byte("\x7fELF\x02\x01\x01 memory of a crashed process "), 50000)
	goodKey := "team-a/web-0/20260301T110000Z-server-SIGSEGV-core-good.zst"
	writeObject(t, filepath.Join(store, goodKey), dump)
	// The arguments are only in the metadata file the manager stores beside the dump.
	if err := os.WriteFile(filepath.Join(store, strings.TrimSuffix(goodKey, ".zst")+".json"),
		[]byte(`{"kind":"CoreDump","spec":{"process":{"executable":"server","commandLine":"/usr/bin/server --port 8080"}},`+
			`"lastWords":{"container":"app","run":"previous","bytes":80}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	// And the crashed container's log, which is the program's to write.
	if err := os.WriteFile(filepath.Join(store, strings.TrimSuffix(goodKey, ".zst")+".log"),
		[]byte("starting\npanic: runtime error: index out of range\x1b[2J\x1b]52;c;cm0gLXJmIH4=\x07\ngoroutine 1 [running]:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badKey := "team-a/web-0/20260301T111000Z-server-SIGSEGV-core-bad.zst"
	writeObject(t, filepath.Join(store, badKey), dump)

	for _, ns := range []string{"coredog-system", "team-a", "team-b"} {
		mustCreate(ctx, t, k8s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	policy := &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: "file://" + store}}}
	mustCreate(ctx, t, k8s, policy)
	policy.Status = coredogv1.CoreDumpPolicyStatus{DesiredAgents: 1, ReadyAgents: 1,
		Dumps:      coredogv1.DumpCounters{Captured: 5, Uploaded: 2, Failed: 1},
		Conditions: []metav1.Condition{{Type: coredogv1.ConditionReady, Status: metav1.ConditionTrue, Reason: coredogv1.ReasonAgentsReady, Message: "1 of 1", LastTransitionTime: metav1.Now()}}}
	if err := k8s.Status().Update(ctx, policy); err != nil {
		t.Fatal(err)
	}

	sha := sum(dump)
	good := apiDump("core-good", 50*time.Minute, int64(len(dump)), store, goodKey, sha)
	bad := apiDump("core-bad", 40*time.Minute, int64(len(dump)), store, badKey, strings.Repeat("0", 64))
	pending := apiDump("core-pending", time.Minute, 1000, store, "", "")
	pending.Status.Phase, pending.Status.Storage = coredogv1.PhasePending, nil
	failed := apiDump("core-failed", 30*time.Minute, 1000, store, "", "")
	failed.Status.Phase, failed.Status.Storage, failed.Status.Message, failed.Status.Attempts = coredogv1.PhaseFailed, nil, "writing the object: permission denied", 5
	other := apiDump("core-other", 20*time.Minute, 1000, store, "", "")
	other.Spec.Signature, other.Spec.Process.Signal, other.Spec.Process.SignalName = "fedcba987654", 6, "SIGABRT"
	other.Status.Pod.Namespace, other.Status.Pod.Name, other.Status.Pod.WorkloadKind, other.Status.Pod.WorkloadName = "team-b", "api-5d8-x", "Deployment", "api"
	other.Status.Phase, other.Status.Storage, other.Status.Reason = coredogv1.PhaseSkipped, nil, coredogv1.ReasonThrottled
	for _, cd := range []*coredogv1.CoreDump{good, bad, pending, failed, other} {
		status := cd.Status
		cd.Labels = map[string]string{
			coredogv1.LabelSignature: cd.Spec.Signature, coredogv1.LabelPod: cd.Status.Pod.Name,
			coredogv1.LabelSignal: cd.Spec.Process.SignalName, coredogv1.LabelPolicy: "default",
		}
		mustCreate(ctx, t, k8s, cd)
		cd.Status = status
		if err := k8s.Status().Update(ctx, cd); err != nil {
			t.Fatalf("status of %s: %v", cd.Name, err)
		}
	}

	mustCreate(ctx, t, k8s, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: agentlease.Name("default", "node-1"), Namespace: "coredog-system",
			Labels: map[string]string{coredogv1.LabelPolicy: "default", coredogv1.LabelNode: "node-1"},
			Annotations: map[string]string{agentlease.AnnotationEndpoint: "https://10.1.2.3:9443", agentlease.AnnotationMode: "watch",
				agentlease.AnnotationCorePattern: "Manage", agentlease.AnnotationLocalBytes: "1048576"}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: new("node-1"), LeaseDurationSeconds: new(int32(30)), RenewTime: new(metav1.NowMicro())},
	})
	mustCreate(ctx, t, k8s, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "web-0.coredumped", Namespace: "team-a"},
		EventTime:  metav1.NowMicro(), ReportingController: "coredog.io/controller", ReportingInstance: "coredog-controller-0",
		Action: "Capture", Reason: coredogv1.EventCoreDumped, Type: corev1.EventTypeNormal, Note: "Container app: server killed by SIGSEGV; core dump core-good stored",
		Regarding: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: "team-a", Name: "web-0"},
		Related:   &corev1.ObjectReference{Kind: "CoreDump", APIVersion: coredogv1.GroupVersion.String(), Namespace: "coredog-system", Name: "core-good"},
	})
	mustCreate(ctx, t, k8s, &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: "core-good.retry", Namespace: "coredog-system"},
		EventTime:  metav1.NowMicro(), ReportingController: "coredog.io/controller", ReportingInstance: "coredog-controller-0",
		Action: "Upload", Reason: "UploadRetried", Type: corev1.EventTypeWarning, Note: "agent unreachable; retrying",
		Regarding: corev1.ObjectReference{Kind: "CoreDump", APIVersion: coredogv1.GroupVersion.String(), Namespace: "coredog-system", Name: "core-good", UID: good.UID},
	})

	run := func(kubeconfig string, args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := Run(ctx, append([]string{"--kubeconfig", kubeconfig}, args...), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	contains := func(t *testing.T, what, got string, want ...string) {
		t.Helper()
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s lacks %q:\n%s", what, w, got)
			}
		}
	}

	t.Run("list", func(t *testing.T) {
		out, _, err := run(admin, "list")
		if err != nil {
			t.Fatal(err)
		}
		rows := strings.Split(strings.TrimSpace(out), "\n")
		if len(rows) != 6 || !regexp.MustCompile(`^NAME\s+NAMESPACE\s+POD\s+CONTAINER\s+EXECUTABLE\s+SIGNAL\s+SIZE\s+PHASE\s+AGE$`).MatchString(rows[0]) {
			t.Fatalf("list:\n%s", out)
		}
		// Oldest crash first.
		for i, name := range []string{"core-good", "core-bad", "core-failed", "core-other", "core-pending"} {
			if !strings.HasPrefix(rows[i+1], name+" ") {
				t.Errorf("row %d is not %s:\n%s", i+1, name, out)
			}
		}
		if !regexp.MustCompile(`core-good\s+team-a\s+web-0\s+app\s+server\s+SIGSEGV\s+1\.7Mi\s+Uploaded\s+50m`).MatchString(out) {
			t.Errorf("core-good row:\n%s", out)
		}
		contains(t, "list", out, "Skipped (Throttled)", "Pending", "Failed")
	})

	t.Run("list filters", func(t *testing.T) {
		out, _, err := run(admin, "list", "--pod", "team-a/web-0", "--signal", "segv", "--since", "45m", "--no-headers")
		if err != nil {
			t.Fatal(err)
		}
		names := firstColumn(out)
		if strings.Join(names, ",") != "core-bad,core-failed,core-pending" {
			t.Errorf("filtered list: %v\n%s", names, out)
		}
		out, _, err = run(admin, "list", "-l", coredogv1.LabelSignature+"=fedcba987654", "--no-headers")
		if err != nil || strings.Join(firstColumn(out), ",") != "core-other" {
			t.Errorf("list -l: %v\n%s", err, out)
		}
		out, errOut, err := run(admin, "list", "--workload", "team-b/deployment/nope")
		if err != nil || out != "" || !strings.Contains(errOut, "No core dumps found in namespace coredog-system") {
			t.Errorf("empty list: %v %q %q", err, out, errOut)
		}
	})

	t.Run("list wide", func(t *testing.T) {
		out, _, err := run(admin, "list", "-o", "wide", "-A")
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "list -o wide -A", out, "NODE", "SIGNATURE", "WORKLOAD", "LOCATION", "coredog-system/core-good",
			"StatefulSet/web", "file://"+filepath.Join(store, goodKey), "0123456789ab", "node-1")
	})

	t.Run("list group", func(t *testing.T) {
		out, _, err := run(admin, "list", "--group")
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^0123456789ab\s+4\s+4\s+server\s+SIGSEGV\s+50m\s+\d+s\s+team-a/StatefulSet/web$`).MatchString(out) ||
			!regexp.MustCompile(`(?m)^fedcba987654\s+1\s+1\s+server\s+SIGABRT\s+20m\s+20m\s+team-b/Deployment/api$`).MatchString(out) {
			t.Errorf("list --group:\n%s", out)
		}
		out, _, err = run(admin, "list", "--group", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var groups []Group
		if err := json.Unmarshal([]byte(out), &groups); err != nil || len(groups) != 2 || groups[0].Count != 4 || len(groups[0].Dumps) != 4 {
			t.Errorf("list --group -o json: %v\n%s", err, out)
		}
	})

	t.Run("list json and yaml", func(t *testing.T) {
		out, _, err := run(admin, "list", "-o", "json", "--pod", "web-0")
		if err != nil {
			t.Fatal(err)
		}
		var list coredogv1.CoreDumpList
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatal(err)
		}
		if list.Kind != "List" || len(list.Items) != 4 || list.Items[0].Kind != "CoreDump" || list.Items[0].Status.Storage.SHA256 != sha || list.Items[0].ManagedFields != nil {
			t.Errorf("list -o json: %s", out)
		}
		out, _, err = run(admin, "list", "-o", "yaml", "--pod", "api-5d8-x")
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "list -o yaml", out, "kind: List", "name: core-other", "signature: fedcba987654")
	})

	t.Run("describe", func(t *testing.T) {
		out, _, err := run(admin, "describe", "core-good")
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "describe", out,
			"Name:             core-good", "  Name:           team-a/web-0", "  Workload:       StatefulSet/web",
			"  Image:          registry.example/web:1.2", "  Image ID:       registry.example/web@sha256:"+sha64,
			"Node:             node-1", "  Executable:     server", "  Arguments:      /usr/bin/server --port 8080",
			"  PID:            7 (host 4242)", "  Signal:         SIGSEGV (11)", "  Fault address:  0x0",
			"  Module:         /usr/bin/server", "  Offset:         0x1a2b", "  Build ID:       deadbeef",
			"Signature:        0123456789ab (3 other dumps have it",
			"  URL:            file://"+filepath.Join(store, goodKey), "  SHA-256:        "+sha,
			"Warning   UploadRetried", "CoreDump/core-good", "agent unreachable; retrying",
			"Normal    CoreDumped", "Pod/team-a/web-0", "core dump core-good stored",
			"Last words:\n  (the previous run of container app, last 3 of 3 stored lines)\n  starting\n"+
				`  panic: runtime error: index out of range\x1b[2J\x1b]52;c;cm0gLXJmIH4=\a`+"\n  goroutine 1 [running]:\n",
		)
		if strings.ContainsAny(out, "\x1b\x07") {
			t.Errorf("describe prints the log's escape sequences:\n%q", out)
		}
		out, _, err = run(admin, "describe", "core-good", "--log-lines", "1")
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "describe --log-lines 1", out, "(the previous run of container app, last 1 of 3 stored lines)\n  goroutine 1 [running]:\n")
		out, _, err = run(admin, "describe", "core-other")
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "describe core-other", out, "Phase:            Skipped (Throttled)", "(no other dump has it)", "Events:           <none>")
		if strings.Contains(out, "CoreDumped") {
			t.Errorf("describe core-other shows another dump's event:\n%s", out)
		}
		_, _, err = run(admin, "describe", "core-nope")
		if err == nil || !strings.Contains(err.Error(), `no CoreDump "core-nope" in namespace coredog-system`) {
			t.Errorf("describe of a missing dump: %v", err)
		}
	})

	t.Run("download", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "core")
		out, _, err := run(admin, "download", "core-good", "-o", target)
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "download", out, "Downloaded core-good to "+target, "SHA-256 verified")
		checkFile(t, target, dump)
		_, _, err = run(admin, "download", "core-good", "-o", target)
		if err == nil || !strings.Contains(err.Error(), "exists; pass --force") {
			t.Errorf("download over an existing file: %v", err)
		}
		if _, _, err := run(admin, "download", "core-good", "-o", target, "--force"); err != nil {
			t.Errorf("download --force: %v", err)
		}
		checkFile(t, target, dump)

		// --raw keeps the stored bytes; -o DIR uses the default name.
		if _, _, err := run(admin, "download", "core-good", "--raw", "-o", dir); err != nil {
			t.Fatal(err)
		}
		stored, _ := os.ReadFile(filepath.Join(store, goodKey))
		checkFile(t, filepath.Join(dir, "core-good.core.zst"), stored)

		// --storage-url overrides the policy.
		if _, _, err := run(admin, "download", "core-good", "-o", filepath.Join(dir, "via-url"), "--storage-url", "file://"+store); err != nil {
			t.Errorf("download --storage-url: %v", err)
		}
		checkFile(t, filepath.Join(dir, "via-url"), dump)
		assertOnly(t, dir, "core", "core-good.core.zst", "via-url")
	})

	t.Run("download checksum mismatch", func(t *testing.T) {
		dir := t.TempDir()
		for _, raw := range []bool{false, true} {
			args := []string{"download", "coredog-system/core-bad", "-o", filepath.Join(dir, "core")}
			if raw {
				args = append(args, "--raw")
			}
			_, _, err := run(admin, args...)
			if !errors.Is(err, errIntegrity) || !strings.Contains(err.Error(), "checksum mismatch") || !strings.Contains(err.Error(), "partial file was deleted") {
				t.Errorf("raw=%v: error %v", raw, err)
			}
			assertOnly(t, dir)
		}
	})

	t.Run("download not stored", func(t *testing.T) {
		_, _, err := run(admin, "download", "core-pending", "-o", filepath.Join(t.TempDir(), "core"))
		if !errors.Is(err, errNotStored) || !strings.Contains(err.Error(), "wait until it is Uploaded") {
			t.Errorf("download of a pending dump: %v", err)
		}
	})

	t.Run("download without access to policies", func(t *testing.T) {
		viewer := kubeconfigFor(t, env, tmp, envtest.User{Name: "viewer"})
		mustCreate(ctx, t, k8s, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "dump-reader", Namespace: "coredog-system"},
			Rules: []rbacv1.PolicyRule{{APIGroups: []string{coredogv1.GroupVersion.Group}, Resources: []string{"coredumps"}, Verbs: []string{"get", "list"}}}})
		mustCreate(ctx, t, k8s, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "viewer", Namespace: "coredog-system"},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "dump-reader"},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "viewer"}}})
		target := filepath.Join(t.TempDir(), "core")
		var err error
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(200 * time.Millisecond) {
			// RBAC takes effect through the authorizer's cache.
			if _, _, err = run(viewer, "download", "core-good", "-o", target); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatalf("download as a user who cannot read policies: %v", err)
		}
		checkFile(t, target, dump)
		_, _, err = run(viewer, "status")
		if err != nil {
			t.Errorf("status with partial rights: %v", err)
		}
	})

	t.Run("debug", func(t *testing.T) {
		out, _, err := run(admin, "debug", "core-good")
		if err != nil {
			t.Fatal(err)
		}
		contains(t, "debug", out,
			"kubectl coredog download core-good -n coredog-system -o core",
			"kubectl run coredog-debug-core-good -n team-a --image=registry.example/web@sha256:"+sha64,
			"kubectl exec -it -n team-a coredog-debug-core-good -- gdb /usr/bin/server /tmp/core",
			"kubectl debug -it -n team-a coredog-debug-core-good")

		// --run: envtest has no kubelet, so the pod never runs.
		dir := t.TempDir()
		t.Setenv("TMPDIR", dir)
		_, errOut, err := run(admin, "debug", "core-good", "--run", "--timeout", "2s")
		if !errors.Is(err, errPodNotRunning) || !strings.Contains(err.Error(), "did not run within 2s") {
			t.Fatalf("debug --run: %v", err)
		}
		contains(t, "debug --run stderr", errOut, "Fetched core-good (1.7Mi, SHA-256 verified)", "Created pod team-a/coredog-debug-core-good")
		var pod corev1.Pod
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: "team-a", Name: "coredog-debug-core-good"}, &pod); err != nil {
			t.Fatal(err)
		}
		if c := pod.Spec.Containers[0]; c.Image != "registry.example/web@sha256:"+sha64 || strings.Join(c.Command, " ") != "sleep infinity" ||
			pod.Spec.NodeSelector["kubernetes.io/arch"] != "amd64" || pod.Annotations[annotationDebugFor] != "coredog-system/core-good" {
			t.Errorf("debug pod: %+v", pod.Spec)
		}
		assertOnly(t, dir) // the fetched dump is not left behind
		// A second --run reuses the pod.
		_, errOut, err = run(admin, "debug", "core-good", "--run", "--timeout", "1s")
		if !errors.Is(err, errPodNotRunning) || !strings.Contains(errOut, "Reusing debug pod") {
			t.Errorf("second debug --run: %v, %s", err, errOut)
		}
	})

	t.Run("status", func(t *testing.T) {
		out, _, err := run(admin, "status")
		if err != nil {
			t.Fatal(err)
		}
		for _, re := range []string{
			`(?m)^  default\s+True\s+1/1\s+file://` + regexp.QuoteMeta(store) + `\s+5\s+2\s+0\s+1\s+0\s+-$`,
			`(?m)^  default\s+node-1\s+https://10\.1\.2\.3:9443\s+\d+s ago\s+watch\s+Manage\s+1Mi$`,
			`(?m)^  core-failed\s+team-a/web-0\s+node-1\s+Failed\s+30m\s+5\s+writing the object: permission denied$`,
			`(?m)^  core-pending\s+team-a/web-0\s+node-1\s+Pending\s+\d+s\s+1\s+-$`,
		} {
			if !regexp.MustCompile(re).MatchString(out) {
				t.Errorf("status does not match %s:\n%s", re, out)
			}
		}
		if strings.Contains(out, "core-good") || strings.Contains(out, "core-other") {
			t.Errorf("status lists dumps that are neither waiting nor failed:\n%s", out)
		}
	})
}

// apiDump is a CoreDump in coredog-system as the controller leaves it;
// the key is empty for dumps that are not stored.
func apiDump(name string, ago time.Duration, size int64, store, key, sha string) *coredogv1.CoreDump {
	at := metav1.NewTime(time.Now().Add(-ago).Truncate(time.Second))
	cd := &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "coredog-system"},
		Spec: coredogv1.CoreDumpSpec{
			PolicyName: "default", NodeName: "node-1", FileName: "core.web-0.server.7.11." + name,
			Size: size, DisplaySize: coredogv1.DisplaySize(size), DetectedAt: at, DetectedBy: coredogv1.DetectedByWatch,
			Process: coredogv1.ProcessInfo{Executable: "server", PID: 7, HostPID: 4242,
				Signal: 11, SignalName: "SIGSEGV", DumpedAt: &at},
			ELF:       &coredogv1.ELFInfo{Machine: "x86_64", Threads: 2, FaultAddress: "0x0", CrashModule: "/usr/bin/server", CrashOffset: "0x1a2b", BuildID: "deadbeef"},
			Signature: "0123456789ab",
		},
		Status: coredogv1.CoreDumpStatus{
			Phase:    coredogv1.PhaseUploaded,
			Attempts: 1,
			Pod: &coredogv1.PodReference{Namespace: "team-a", Name: "web-0", UID: "1234", Container: "app",
				Image: "registry.example/web:1.2", ImageID: "registry.example/web@sha256:" + sha64,
				WorkloadKind: "StatefulSet", WorkloadName: "web", ResolvedBy: coredogv1.ResolvedByContainerID},
		},
	}
	if key != "" {
		cd.Status.Storage = &coredogv1.StorageStatus{URL: "file://" + filepath.Join(store, key), Key: key,
			Compression: coredogv1.CompressionZstd, StoredSize: size / 10, SHA256: sha, UploadedAt: &at}
	}
	return cd
}

func writeObject(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, enc.EncodeAll(data, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func kubeconfigFor(t *testing.T, env *envtest.Environment, dir string, u envtest.User) string {
	t.Helper()
	user, err := env.AddUser(u, nil)
	if err != nil {
		t.Fatalf("adding user %s: %v", u.Name, err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, u.Name+".kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustCreate(ctx context.Context, t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(ctx, obj); err != nil {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func firstColumn(out string) []string {
	var names []string
	for l := range strings.SplitSeq(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names
}

// checkFile asserts a downloaded file's content and mode.
func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %v, want 0600", path, fi.Mode().Perm())
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got, want) {
		t.Errorf("%s holds %d bytes, not the %d expected", path, len(got), len(want))
	}
}

// assertOnly asserts that dir holds exactly the named entries (no partial files).
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %v, want %v", dir, got, names)
	}
}
