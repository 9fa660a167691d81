package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/coredog/coredog/agent/corefile"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/test/localcluster"
	"github.com/coredog/coredog/test/testcrash"
)

// options are the demo's settings.
type options struct {
	// Repo is the repository root (config/, hack/).
	Repo string
	// BinDir holds the manager and agent binaries; "" means Repo/bin.
	BinDir string
	// Assets holds kube-apiserver, etcd and kubectl; "" runs hack/envtest.sh.
	Assets string
	// WorkDir is where the demo's temporary directory is made; "" means os.TempDir().
	WorkDir string
	// Keep leaves everything running until ctx is cancelled (Ctrl-C).
	Keep bool
	// S3 stores into a local versitygw S3 server instead of file://.
	S3 bool
	// Out receives the transcript; nil means os.Stdout.
	Out io.Writer
}

// What the demo creates.
const (
	systemNamespace = "coredog-system"
	demoNamespace   = "demo"
	nodeName        = "demo-node"
	podName         = "crashy-0"
	containerName   = "app"
	programName     = "crashy"
	agentImage      = "coredog:demo"
	s3Bucket        = "demo-bucket"
	s3SecretName    = "coredog-demo-s3"
	samplePolicy    = "config/samples/coredog_v1alpha1_coredumppolicy.yaml"
	crdDir          = "config/crd/bases"

	uploadTimeout  = 60 * time.Second
	startTimeout   = 30 * time.Second
	stopGrace      = 10 * time.Second
	tailLines      = 30
	progressPeriod = 10 * time.Second
)

// demo is one run's state.
type demo struct {
	o     options
	p     *printer
	began time.Time

	dir, logDir, coresDir string
	assets                string
	cp                    *localcluster.ControlPlane
	mu                    sync.Mutex // guards procs, which within's watcher reads
	procs                 []*localcluster.Process
	manager, agent        *localcluster.Process
	s3                    *s3Server

	step, total int
	title       string

	policyName string
	pattern    *corefile.Pattern
	storageURL string
	creds      map[string][]byte // the storage Secret's data; nil for file://

	coreName     string
	originalCore string // a copy of the core, taken before the agent could delete it
	dump         *coredogv1.CoreDump
}

// stepError says which step failed.
type stepError struct {
	step, total int
	title       string
	err         error
}

func (e *stepError) Error() string {
	return fmt.Sprintf("step %d/%d (%s): %v", e.step, e.total, e.title, e.err)
}

func (e *stepError) Unwrap() error { return e.err }

// errInterrupted is returned when ctx ends before the demo did.
var errInterrupted = errors.New("interrupted")

// run is the whole demo. It returns nil only when the stored dump was read
// back and matched the core the kernel wrote; it always stops what it
// started, and removes its directory unless a step failed (the directory then
// holds the logs).
func run(ctx context.Context, o options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.BinDir == "" {
		o.BinDir = filepath.Join(o.Repo, "bin")
	}
	d := &demo{o: o, p: &printer{out: o.Out}, began: time.Now()}

	type step struct {
		title string
		fn    func(context.Context) error
	}
	steps := []step{
		{"Control-plane binaries", d.stepBinaries},
		{"Control plane: kube-apiserver, etcd, CRDs", d.stepControlPlane},
	}
	if o.S3 {
		steps = append(steps, step{"S3 server (versitygw)", d.stepS3})
	}
	steps = append(steps,
		step{"Manager, policy and agent", d.stepOperator},
		step{"A pod on the agent's node", d.stepPod},
		step{"A real crash", d.stepCrash},
		step{"Upload, attribution and the stored dump", d.stepUpload},
	)
	d.total = len(steps) + 1 // and cleaning up

	storageName := "a directory (file://)"
	if o.S3 {
		storageName = "a local S3 server (versitygw)"
	}
	d.p.write(fmt.Sprintf("CoreDog demo: a real kube-apiserver and etcd, the manager and a node agent as processes on\n"+
		"this machine, a real crash, and the dump stored in %s.\n", storageName))

	dir, err := os.MkdirTemp(o.WorkDir, "coredog-demo-")
	if err != nil {
		return fmt.Errorf("making the demo directory: %w", err)
	}
	d.dir = dir
	d.logDir = filepath.Join(dir, "logs")
	d.coresDir = filepath.Join(dir, "cores")
	if err := os.MkdirAll(d.logDir, 0o755); err != nil {
		return err
	}

	// The processes run in process groups of their own and would outlive a panic.
	defer func() {
		if r := recover(); r != nil {
			_ = d.stopAll()
			panic(r)
		}
	}()
	for _, s := range steps {
		d.begin(s.title)
		if err := s.fn(ctx); err != nil {
			return d.fail(ctx, err)
		}
	}

	if o.Keep {
		d.keep(ctx)
	}
	d.begin("Cleaning up")
	if err := d.stopAll(); err != nil {
		d.p.linef("warning: %v", err)
	}
	if err := os.RemoveAll(d.dir); err != nil {
		d.p.linef("could not remove %s: %v", d.dir, err)
	} else {
		d.p.linef("removed %s", d.dir)
	}
	d.p.write(fmt.Sprintf("\nDemo finished in %s.\n", time.Since(d.began).Round(100*time.Millisecond)))
	return nil
}

// begin starts a numbered step.
func (d *demo) begin(title string) {
	d.step++
	d.title = title
	d.p.write(fmt.Sprintf("\n[%d/%d] %s\n", d.step, d.total, title))
}

// fail reports a failed step with the end of every log, stops everything and
// keeps the directory for the logs.
func (d *demo) fail(ctx context.Context, err error) error {
	serr := &stepError{step: d.step, total: d.total, title: d.title, err: err}
	if ctx.Err() != nil {
		d.p.write(fmt.Sprintf("\nInterrupted during step %d/%d (%s); stopping everything.\n", d.step, d.total, d.title))
		if err := d.stopAll(); err != nil {
			d.p.linef("warning: %v", err)
		}
		_ = os.RemoveAll(d.dir)
		return &stepError{step: d.step, total: d.total, title: d.title, err: errInterrupted}
	}
	d.p.write(fmt.Sprintf("\nFAILED at step %d/%d (%s):\n", d.step, d.total, d.title))
	d.p.linef("%v", err)
	d.p.linef("logs: %s", d.logDir)
	logs, _ := filepath.Glob(filepath.Join(d.logDir, "*.log"))
	if len(logs) == 0 {
		d.p.linef("(no process had been started yet, so there are no logs; the output above is all there is)")
	}
	for _, l := range logs {
		d.p.linef("--- %s (last %d lines)", l, tailLines)
		d.p.block(localcluster.TailFile(l, tailLines))
	}
	if err := d.stopAll(); err != nil {
		d.p.linef("warning: %v", err)
	}
	d.p.linef("The demo directory is kept for its logs; remove it with: rm -rf %s", d.dir)
	return serr
}

// keep leaves everything running until ctx ends.
func (d *demo) keep(ctx context.Context) {
	d.p.write("\nKEEP=1: everything is still running. In another terminal:\n")
	d.p.block(fmt.Sprintf("export KUBECONFIG=%s\nexport PATH=%s:$PATH    # the envtest kubectl\n"+
		"kubectl get coredumps -n %s -o wide\nkubectl get events -n %s\nkubectl get coredumppolicy %s -o yaml",
		d.cp.Kubeconfig, d.assets, systemNamespace, demoNamespace, d.policyName))
	running := make([]string, 0, len(d.procs)+1)
	for _, p := range d.procs {
		running = append(running, fmt.Sprintf("%s (pid %d)", p.Name, p.Cmd.Process.Pid))
	}
	running = append(running, "kube-apiserver and etcd (envtest)")
	d.p.linef("Running: %s.", strings.Join(running, ", "))
	d.p.linef("Logs: %s. Watched directory: %s", d.logDir, d.coresDir)
	d.p.linef("Press Ctrl-C here (or run `kill %d`) to stop everything and remove %s.", os.Getpid(), d.dir)
	<-ctx.Done()
}

// stopAll stops the processes (last started first), then the control plane.
func (d *demo) stopAll() error {
	var errs []error
	var stopped []string
	d.mu.Lock()
	procs := d.procs
	d.procs = nil
	d.mu.Unlock()
	for _, p := range slices.Backward(procs) {

		if err := p.Stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
		stopped = append(stopped, p.Name)
	}
	if d.cp != nil {
		if err := d.cp.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping kube-apiserver and etcd: %w", err))
		}
		d.cp = nil
		stopped = append(stopped, "kube-apiserver", "etcd")
	}
	if len(stopped) > 0 {
		d.p.linef("stopped %s", strings.Join(stopped, ", "))
	}
	return errors.Join(errs...)
}

// exited reports a process the demo started that is no longer running.
func (d *demo) exited() error {
	d.mu.Lock()
	procs := d.procs
	d.mu.Unlock()
	for _, p := range procs {
		if p.Exited() {
			return fmt.Errorf("%s exited unexpectedly (%v); see %s", p.Name, p.Wait(time.Second), p.LogPath)
		}
	}
	return nil
}

// within runs fn with a deadline, and cancels it as soon as one of the
// demo's processes exits. what names the wait in errors.
func (d *demo) within(ctx context.Context, what string, timeout time.Duration, fn func(context.Context) error) error {
	if err := d.exited(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	tctx, cancel := context.WithTimeoutCause(ctx, timeout, fmt.Errorf("timed out after %s", timeout))
	defer cancel()
	pctx, pcancel := context.WithCancelCause(tctx)
	watching := make(chan struct{})
	defer func() {
		pcancel(nil)
		<-watching
	}()
	go func() {
		defer close(watching)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				if err := d.exited(); err != nil {
					pcancel(err)
					return
				}
			}
		}
	}()
	err := fn(pctx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return errInterrupted
	}
	if pctx.Err() != nil {
		return fmt.Errorf("%s: %w", what, context.Cause(pctx))
	}
	return fmt.Errorf("%s: %w", what, err)
}

// poll calls cond every interval until it returns true or an error.
func poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// rel shows a path inside the repository relative to it.
func (d *demo) rel(s string) string {
	return strings.ReplaceAll(s, d.o.Repo+string(filepath.Separator), "")
}

// script runs a hack/ script, showing its progress (stderr) as it goes, and
// returns the last line of its output.
func (d *demo) script(ctx context.Context, name string) (string, error) {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(d.o.Repo, name))
	cmd.Dir = d.o.Repo
	var out bytes.Buffer
	progress := &lineWriter{p: d.p, prefix: indent + "  "}
	cmd.Stdout, cmd.Stderr = &out, progress
	err := cmd.Run()
	progress.Flush()
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// kubectl runs kubectl against the demo's cluster and shows the command
// (without --kubeconfig) and its output.
func (d *demo) kubectl(ctx context.Context, args ...string) error {
	d.p.linef("$ kubectl %s", d.rel(strings.Join(args, " ")))
	out, err := d.cp.RunKubectl(ctx, nil, args...)
	d.p.block(out)
	return err
}

func (d *demo) startProcess(name, bin string, args, env []string) (*localcluster.Process, error) {
	p, err := localcluster.StartProcess(name, d.logDir, bin, args, env)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return p, nil
}

// --- steps ---------------------------------------------------------------

func (d *demo) stepBinaries(ctx context.Context) error {
	for _, b := range []string{"manager", "agent"} {
		path := filepath.Join(d.o.BinDir, b)
		if st, err := os.Stat(path); err != nil || st.IsDir() {
			return fmt.Errorf("%s is missing: run `make build` first (`make demo` does)", path)
		}
	}
	d.p.linef("manager and agent: %s", d.rel(d.o.BinDir))
	if d.o.Assets != "" {
		d.assets = d.o.Assets
	} else {
		d.p.linef("hack/envtest.sh builds kube-apiserver, etcd and kubectl from their Go modules when they are")
		d.p.linef("missing. The first build takes several minutes (15-20 on a 2-core machine); later runs reuse them.")
		assets, err := d.script(ctx, "hack/envtest.sh")
		if err != nil {
			return err
		}
		d.assets = assets
	}
	for _, b := range []string{"kube-apiserver", "etcd", "kubectl"} {
		if _, err := os.Stat(filepath.Join(d.assets, b)); err != nil {
			return fmt.Errorf("%s has no %s: %w", d.assets, b, err)
		}
	}
	d.p.linef("kube-apiserver, etcd and kubectl: %s", d.assets)
	return nil
}

func (d *demo) stepControlPlane(ctx context.Context) error {
	d.p.linef("demo directory: %s (process logs in logs/)", d.dir)
	cp, err := localcluster.StartWithOptions(d.dir, d.assets, filepath.Join(d.o.Repo, crdDir), localcluster.Options{LogDir: d.logDir})
	if err != nil {
		return err
	}
	d.cp = cp
	d.p.linef("kube-apiserver is serving at %s; kubeconfig: %s", cp.Config.Host, cp.Kubeconfig)
	d.p.linef("envtest installed CoreDog's CRDs from config/crd/bases as it started; this is how you would")
	d.p.linef("install them on a cluster (applying them again is harmless):")
	return d.kubectl(ctx, "apply", "-f", filepath.Join(d.o.Repo, crdDir))
}

func (d *demo) stepOperator(ctx context.Context) error {
	if err := d.cp.EnsureNamespace(ctx, systemNamespace, nil); err != nil {
		return err
	}
	d.p.linef("namespace %s: the controller's, where CoreDumps, Secrets and agent Leases live", systemNamespace)

	managerArgs := []string{
		"--kubeconfig", d.cp.Kubeconfig, "--namespace", systemNamespace, "--agent-image", agentImage,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--zap-encoder", "console",
	}
	m, err := d.startProcess("manager", filepath.Join(d.o.BinDir, "manager"), managerArgs, nil)
	if err != nil {
		return err
	}
	d.manager = m
	d.p.linef("started the manager (pid %d): %s %s", m.Cmd.Process.Pid, d.rel(m.Cmd.Path), strings.Join(managerArgs, " "))

	if d.o.S3 {
		secret := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: s3SecretName, Namespace: systemNamespace},
			Data:       d.creds,
		}
		if err := d.cp.Client.Create(ctx, secret); err != nil {
			return fmt.Errorf("creating Secret %s/%s: %w", systemNamespace, s3SecretName, err)
		}
		d.p.linef("created Secret %s/%s with %s and %s",
			systemNamespace, s3SecretName, storage.KeyAWSAccessKeyID, storage.KeyAWSSecretAccessKey)
		d.p.linef("(only the manager reads it: storage credentials never reach the agents)")
	}

	policyFile, err := d.writePolicy()
	if err != nil {
		return err
	}
	if err := d.kubectl(ctx, "apply", "-f", policyFile); err != nil {
		return err
	}

	tlsDir := filepath.Join(d.dir, "agent-ca")
	if err := d.within(ctx, "waiting for the manager to make the agents' CA Secret", startTimeout, func(ctx context.Context) error {
		return d.cp.WriteAgentTLS(ctx, systemNamespace, d.policyName, tlsDir)
	}); err != nil {
		return err
	}
	dsName := agentset.DaemonSetName(d.policyName)
	if err := d.within(ctx, "waiting for the manager to make DaemonSet "+systemNamespace+"/"+dsName, startTimeout, func(ctx context.Context) error {
		return poll(ctx, 100*time.Millisecond, func() (bool, error) {
			var ds appsv1.DaemonSet
			return d.cp.Client.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: dsName}, &ds) == nil, nil
		})
	}); err != nil {
		return err
	}
	d.p.linef("the manager turned the policy into a DaemonSet of agents, a private CA (%s) and the", agentset.CASecretName(d.policyName))
	d.p.linef("CA certificate the agents mount (%s); each agent makes its own serving key and the", agentset.AgentCASecretName(d.policyName))
	d.p.linef("manager certifies it for the agent's node through the agent's Lease:")
	if err := d.kubectl(ctx, "get", "daemonsets,secrets", "-n", systemNamespace); err != nil {
		return err
	}
	d.p.linef("No kubelet runs here, so the DaemonSet gets no pods: the demo runs the agent itself, as that pod")
	d.p.linef("would, with the Secret written to %s as the kubelet would mount it.", tlsDir)

	if err := os.MkdirAll(d.coresDir, 0o755); err != nil {
		return err
	}
	agentArgs := []string{
		"--kubeconfig", d.cp.Kubeconfig, "--node-name", nodeName, "--policy", d.policyName,
		"--namespace", systemNamespace, "--dir", d.coresDir, "--file-name-pattern", d.pattern.String(),
		"--proc-root", "/proc", "--listen", "127.0.0.1:0", "--tls-dir", tlsDir,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0",
		"--poll-interval", "1s", "--settle-time", "500ms", "--lease-renew-interval", "2s",
		"--min-node-free", "0%", "--zap-encoder", "console",
	}
	a, err := d.startProcess("agent", filepath.Join(d.o.BinDir, "agent"), agentArgs, nil)
	if err != nil {
		return err
	}
	d.agent = a
	shown := make([]string, len(agentArgs))
	for i, s := range agentArgs {
		shown[i] = s
		if s == "" {
			shown[i] = `""`
		}
	}
	d.p.linef("started the agent (pid %d): %s %s", a.Cmd.Process.Pid, d.rel(a.Cmd.Path), strings.Join(shown, " "))
	d.p.linef("(--proc-root /proc: the agent sees the host's PIDs, as the DaemonSet's pod does with hostPID, so a")
	d.p.linef("file named with %%P counts as complete once that process is gone and the file has stopped changing)")

	lease := agentlease.Name(d.policyName, nodeName)
	var endpoint string
	if err := d.within(ctx, "waiting for the agent to publish its endpoint in Lease "+systemNamespace+"/"+lease, startTimeout, func(ctx context.Context) error {
		return poll(ctx, 100*time.Millisecond, func() (bool, error) {
			var l coordinationv1.Lease
			if err := d.cp.Client.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: lease}, &l); err != nil {
				return false, nil
			}
			endpoint = l.Annotations[agentlease.AnnotationEndpoint]
			return endpoint != "", nil
		})
	}); err != nil {
		return err
	}
	d.p.linef("the agent is watching %s and serves dumps over mutual TLS at %s", d.coresDir, endpoint)
	d.p.linef("(published in Lease %s/%s, where the manager looks for it)", systemNamespace, lease)
	return nil
}

// writePolicy writes the sample policy with its hostPath and storage
// pointed into the demo directory, says what changed, and returns the file.
func (d *demo) writePolicy() (string, error) {
	raw, err := os.ReadFile(filepath.Join(d.o.Repo, samplePolicy))
	if err != nil {
		return "", err
	}
	var obj map[string]any
	if err := yaml.Unmarshal(raw, &obj); err != nil {
		return "", fmt.Errorf("%s: %w", samplePolicy, err)
	}
	meta, _ := obj["metadata"].(map[string]any)
	spec, _ := obj["spec"].(map[string]any)
	if meta == nil || spec == nil {
		return "", fmt.Errorf("%s: no metadata or spec", samplePolicy)
	}
	d.policyName, _ = meta["name"].(string)
	if d.policyName == "" {
		return "", fmt.Errorf("%s: no metadata.name", samplePolicy)
	}
	pattern, _ := spec["fileNamePattern"].(string)
	if pattern == "" {
		pattern = coredogv1.DefaultFileNamePattern
	}
	if d.pattern, err = corefile.ParsePattern(pattern); err != nil {
		return "", fmt.Errorf("%s: spec.fileNamePattern: %w", samplePolicy, err)
	}
	st, _ := spec["storage"].(map[string]any)
	if st == nil {
		st = map[string]any{}
		spec["storage"] = st
	}
	if !d.o.S3 {
		d.storageURL = "file://" + filepath.Join(d.dir, "bucket")
	}
	type change struct{ field, from, to string }
	show := func(v any) string {
		if s, ok := v.(string); ok && s != "" {
			return s
		}
		return "(none)"
	}
	changes := []change{
		{"spec.hostPath", show(spec["hostPath"]), d.coresDir},
		{"spec.storage.url", show(st["url"]), d.storageURL},
	}
	spec["hostPath"] = d.coresDir
	st["url"] = d.storageURL
	if d.o.S3 {
		from := "(none)"
		if ref, ok := st["secretRef"].(map[string]any); ok {
			from = show(ref["name"])
		}
		changes = append(changes, change{"spec.storage.secretRef.name", from, s3SecretName})
		st["secretRef"] = map[string]any{"name": s3SecretName}
	}
	out, err := yaml.Marshal(obj)
	if err != nil {
		return "", err
	}
	header := fmt.Sprintf("# %s, rewritten by the demo: the agent watches\n# a directory of the demo's and dumps are stored where the demo can read them.\n", samplePolicy)
	path := filepath.Join(d.dir, "policy.yaml")
	if err := os.WriteFile(path, append([]byte(header), out...), 0o644); err != nil {
		return "", err
	}
	d.p.linef("applying a modified copy of %s (%s):", samplePolicy, path)
	for _, c := range changes {
		d.p.linef("  %-28s %s", c.field, c.from)
		d.p.linef("  %-28s -> %s", "", c.to)
	}
	return path, nil
}

func (d *demo) stepPod(ctx context.Context) error {
	if err := d.cp.EnsureNamespace(ctx, demoNamespace, nil); err != nil {
		return err
	}
	started := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: demoNamespace, Labels: map[string]string{"app": "crashy"}},
		Spec: corev1.PodSpec{
			NodeName: nodeName,
			Containers: []corev1.Container{{
				Name: containerName, Image: "registry.example/crashy:demo", Command: []string{"/usr/local/bin/" + programName},
			}},
		},
	}
	if err := d.cp.Client.Create(ctx, pod); err != nil {
		return fmt.Errorf("creating pod %s/%s: %w", demoNamespace, podName, err)
	}
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	pod.Status = corev1.PodStatus{
		Phase:     corev1.PodRunning,
		StartTime: &started,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: started},
		},
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: containerName, Image: "registry.example/crashy:demo",
			ImageID:     "registry.example/crashy@sha256:" + strings.Repeat("0", 64),
			ContainerID: "containerd://" + hex.EncodeToString(id),
			Ready:       true, Started: new(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
		}},
	}
	if err := d.cp.Client.Status().Update(ctx, pod); err != nil {
		return fmt.Errorf("setting the status of pod %s/%s: %w", demoNamespace, podName, err)
	}
	d.p.linef("created pod %s/%s on node %s, and set its status through the status subresource as the", demoNamespace, podName, nodeName)
	d.p.linef("kubelet would (none runs here), so that the manager has a pod to attribute the crash to:")
	return d.kubectl(ctx, "get", "pod", podName, "-n", demoNamespace, "-o", "wide")
}

func (d *demo) stepCrash(ctx context.Context) error {
	buildDir := filepath.Join(d.dir, "build")
	stage := filepath.Join(d.dir, "stage") // beside the watched directory: same file system, so a rename is atomic
	for _, dir := range []string{buildDir, stage} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	prog, err := testcrash.Build(buildDir, programName)
	if err != nil {
		return err
	}
	d.p.linef("built %s, a C program that writes through a NULL pointer (gcc)", prog)
	c, err := testcrash.Run(prog, stage, func(format string, args ...any) { d.p.linef(format, args...) })
	if err != nil {
		return err
	}
	st, err := os.Stat(c.Core)
	if err != nil {
		return err
	}
	d.p.linef("ran it in %s with RLIMIT_CORE raised: pid %d died of SIGSEGV; %s (%d bytes)", stage, c.PID, c.Core, st.Size())

	// Keep a copy first: once the dump is Uploaded the agent deletes its file.
	d.originalCore = filepath.Join(d.dir, "original.core")
	if err := copyFile(c.Core, d.originalCore); err != nil {
		return fmt.Errorf("copying the core: %w", err)
	}

	now := time.Now()
	d.coreName = d.pattern.Render(corefile.NameFields{
		Executable: programName, PID: int64(c.PID), HostPID: int64(c.PID), Hostname: podName,
		Signal: 11, Time: now,
	})
	corePattern := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/core_pattern"); err == nil {
		corePattern = strings.TrimSpace(string(b))
	}
	if c.ViaGDB {
		d.p.linef("This machine's core_pattern is %q, so the kernel wrote no core beside the program; gdb's", corePattern)
		d.p.linef("gcore took one instead.")
	} else {
		d.p.linef("This machine's core_pattern is `%s`, so the kernel wrote ./%s in the program's working", corePattern, filepath.Base(c.Core))
		d.p.linef("directory.")
	}
	d.p.linef("On a node set up for CoreDog, core_pattern is <hostPath>/%s and the kernel names the file", d.pattern)
	d.p.linef("itself; here the demo renames it into the watched directory as the policy's pattern would name it")
	d.p.linef("(%%h = %s, the pod's hostname; %%e = %s; %%P = %d; %%s = 11; %%t = now):", podName, programName, c.PID)
	target := filepath.Join(d.coresDir, d.coreName)
	if err := os.Rename(c.Core, target); err != nil {
		return fmt.Errorf("renaming the core into the watched directory: %w", err)
	}
	d.p.linef("  %s", target)
	return nil
}

func (d *demo) stepUpload(ctx context.Context) error {
	d.p.linef("waiting (up to %s) for the agent to find the file and create a CoreDump, and for the manager", uploadTimeout)
	d.p.linef("to attribute it to the pod and stream it from the agent into storage:")
	started := time.Now()
	lastPhase := coredogv1.Phase("-")
	nextProgress := started.Add(progressPeriod)
	err := d.within(ctx, "waiting for the CoreDump of "+d.coreName+" to be Uploaded", uploadTimeout, func(ctx context.Context) error {
		return poll(ctx, 200*time.Millisecond, func() (bool, error) {
			cd, err := d.findDump(ctx)
			if err != nil {
				return false, nil
			}
			phase := coredogv1.Phase("(not yet)")
			if cd != nil {
				phase = cd.Status.Phase
				if phase == "" {
					phase = coredogv1.PhasePending
				}
			}
			elapsed := time.Since(started).Round(100 * time.Millisecond)
			if phase != lastPhase && cd != nil {
				d.p.linef("  %5s  CoreDump %s: %s", elapsed, cd.Name, phase)
				lastPhase = phase
			}
			if time.Now().After(nextProgress) {
				d.p.linef("  %5s  still waiting; CoreDump: %s", elapsed, phase)
				nextProgress = nextProgress.Add(progressPeriod)
			}
			if cd == nil {
				return false, nil
			}
			switch cd.Status.Phase {
			case coredogv1.PhaseUploaded:
				d.dump = cd
				return true, nil
			case coredogv1.PhaseFailed, coredogv1.PhaseSkipped:
				return false, fmt.Errorf("CoreDump %s is %s (%s): %s", cd.Name, cd.Status.Phase, cd.Status.Reason, cd.Status.Message)
			}
			return false, nil
		})
	})
	if err != nil {
		return err
	}
	cd := d.dump
	d.p.linef("Uploaded %s after the core landed in the watched directory.", time.Since(started).Round(100*time.Millisecond))

	// The agent lets go of the node's copy once the dump is Uploaded.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = poll(wctx, 100*time.Millisecond, func() (bool, error) {
		_, err := os.Stat(filepath.Join(d.coresDir, d.coreName))
		return errors.Is(err, fs.ErrNotExist), nil
	})
	cancel()
	if err == nil {
		d.p.linef("The agent deleted %s from the watched directory: the node keeps nothing it has handed over.", d.coreName)
	} else {
		d.p.linef("(the agent has not deleted %s from the watched directory yet)", d.coreName)
	}

	d.p.write("\n")
	if err := d.kubectl(ctx, "get", "coredumps", "-n", systemNamespace, "-o", "wide"); err != nil {
		return err
	}
	d.p.write("\n")
	if err := d.kubectl(ctx, "describe", "coredump", cd.Name, "-n", systemNamespace); err != nil {
		return err
	}

	// The event is recorded asynchronously; wait for it before showing it.
	if err := d.within(ctx, "waiting for the CoreDumped event on pod "+demoNamespace+"/"+podName, 15*time.Second, func(ctx context.Context) error {
		return poll(ctx, 200*time.Millisecond, func() (bool, error) {
			var evs eventsv1.EventList
			if err := d.cp.Client.List(ctx, &evs, client.InNamespace(demoNamespace)); err != nil {
				return false, nil
			}
			for _, e := range evs.Items {
				if e.Reason == "CoreDumped" && e.Regarding.Name == podName {
					return true, nil
				}
			}
			return false, nil
		})
	}); err != nil {
		return err
	}
	d.p.write("\n")
	if err := d.kubectl(ctx, "get", "events", "-n", demoNamespace, "--field-selector", "reason=CoreDumped"); err != nil {
		return err
	}

	return d.verify(ctx, cd)
}

// findDump returns the CoreDump of the demo's core file, or nil.
func (d *demo) findDump(ctx context.Context) (*coredogv1.CoreDump, error) {
	var list coredogv1.CoreDumpList
	if err := d.cp.Client.List(ctx, &list, client.InNamespace(systemNamespace)); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Spec.FileName == d.coreName && list.Items[i].Spec.PolicyName == d.policyName {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// verify reads the stored dump back through the same storage code the
// manager uses and checks that it decompresses to the core the kernel wrote.
func (d *demo) verify(ctx context.Context, cd *coredogv1.CoreDump) error {
	st := cd.Status.Storage
	if st == nil || st.Key == "" {
		return fmt.Errorf("CoreDump %s is Uploaded but says nothing about where", cd.Name)
	}
	d.p.write("\n")
	d.p.linef("stored object: %s", st.URL)
	loc, err := storage.ParseURL(d.storageURL)
	if err != nil {
		return err
	}
	if loc.Scheme == storage.SchemeFile {
		d.p.linef("files in %s:", loc.Bucket)
		var files []string
		_ = filepath.WalkDir(loc.Bucket, func(path string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() && !strings.HasSuffix(path, ".attrs") {
				if info, err := e.Info(); err == nil {
					files = append(files, fmt.Sprintf("%9d  %s", info.Size(), strings.TrimPrefix(path, loc.Bucket+"/")))
				}
			}
			return nil
		})
		sort.Strings(files)
		for _, f := range files {
			d.p.linef("  %s", f)
		}
	} else if d.s3 != nil {
		objects, err := d.s3.list(ctx, loc.Bucket)
		if err != nil {
			return err
		}
		d.p.linef("objects in s3://%s (ListObjectsV2 at %s):", loc.Bucket, d.s3.endpoint)
		for _, o := range objects {
			d.p.linef("  %s", o)
		}
		if path := filepath.Join(d.s3.root, loc.Bucket, filepath.FromSlash(st.Key)); fileExists(path) {
			d.p.linef("(versitygw's posix backend keeps the object as the file %s)", path)
		}
	}

	want, err := os.ReadFile(d.originalCore)
	if err != nil {
		return err
	}
	store, err := storage.Open(ctx, loc, d.creds)
	if err != nil {
		return fmt.Errorf("opening %s: %w", d.storageURL, err)
	}
	defer store.Close()
	key, ok := loc.KeyOf(st.URL)
	if !ok {
		return fmt.Errorf("%s is not in %s", st.URL, d.storageURL)
	}
	r, err := store.Read(ctx, key)
	if err != nil {
		return err
	}
	defer r.Close()
	var stored countingReader
	stored.r = r
	dec, err := storage.EncodingZstd.NewReader(&stored)
	if err != nil {
		return err
	}
	defer dec.Close()
	got, err := io.ReadAll(dec)
	if err != nil {
		return fmt.Errorf("decompressing %s (zstd): %w", st.URL, err)
	}
	sum := sha256.Sum256(got)
	gotSum := hex.EncodeToString(sum[:])
	wantSum := sha256.Sum256(want)
	if !bytes.Equal(got, want) {
		return fmt.Errorf("the stored dump decompresses to %d bytes (sha256 %s), but the core on disk had %d bytes (sha256 %s)",
			len(got), gotSum, len(want), hex.EncodeToString(wantSum[:]))
	}
	if st.SHA256 != gotSum {
		return fmt.Errorf("the CoreDump records sha256 %s, but the stored dump's is %s", st.SHA256, gotSum)
	}
	how := "read back from the bucket directory"
	if loc.Scheme == storage.SchemeS3 {
		how = "read back from versitygw over S3"
	}
	d.p.linef("%s and decompressed (zstd, %d bytes stored): identical to the core the kernel wrote", how, stored.n)
	d.p.linef("verified: %d bytes, sha256 %s", len(got), gotSum)
	return nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}
