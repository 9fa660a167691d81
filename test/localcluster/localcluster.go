// Package localcluster runs CoreDog on one machine for the demo and the
// end-to-end tests: an envtest control plane (a real kube-apiserver and
// etcd, built by hack/envtest.sh) with a kubeconfig on disk, and the
// manager and agent binaries as separate processes whose logs go to files.
// It owns starting and stopping those processes; it holds no test logic.
package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/scheme"
)

// ControlPlane is a running kube-apiserver and etcd.
type ControlPlane struct {
	Env *envtest.Environment
	// Config is an admin's REST config; Kubeconfig is the same as a file.
	Config     *rest.Config
	Kubeconfig string
	Client     client.Client
	// Kubectl is the kubectl binary next to the envtest binaries.
	Kubectl string
	Dir     string
	// logs are the control plane's log files, closed by Stop.
	logs []io.Closer
}

// Start starts a control plane with CoreDog's CRDs, writing its kubeconfig
// into dir. assets is the directory hack/envtest.sh prints.
func Start(dir, assets, crdDir string) (*ControlPlane, error) {
	return StartWithOptions(dir, assets, crdDir, Options{})
}

// Options adjust StartWithOptions.
type Options struct {
	// LogDir, when set, receives kube-apiserver.log and etcd.log with those
	// processes' output (otherwise it is discarded).
	LogDir string
}

// StartWithOptions is Start with options.
func StartWithOptions(dir, assets, crdDir string, o Options) (*ControlPlane, error) {
	env := &envtest.Environment{
		BinaryAssetsDirectory: assets,
		CRDDirectoryPaths:     []string{crdDir},
		ErrorIfCRDPathMissing: true,
	}
	var logs []io.Closer
	closeLogs := func() {
		for _, c := range logs {
			_ = c.Close()
		}
	}
	if o.LogDir != "" {
		if err := os.MkdirAll(o.LogDir, 0o755); err != nil {
			return nil, err
		}
		open := func(name string) (io.Writer, error) {
			f, err := os.OpenFile(filepath.Join(o.LogDir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
			if err != nil {
				return nil, err
			}
			logs = append(logs, f)
			return f, nil
		}
		api, err := open("kube-apiserver.log")
		if err != nil {
			closeLogs()
			return nil, err
		}
		etcd, err := open("etcd.log")
		if err != nil {
			closeLogs()
			return nil, err
		}
		env.ControlPlane.APIServer = &envtest.APIServer{Out: api, Err: api}
		env.ControlPlane.Etcd = &envtest.Etcd{Out: etcd, Err: etcd}
	}
	cfg, err := env.Start()
	if err != nil {
		closeLogs()
		return nil, fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	cp := &ControlPlane{Env: env, Config: cfg, Dir: dir, Kubectl: filepath.Join(assets, "kubectl"), logs: logs}
	user, err := env.AddUser(envtest.User{Name: "coredog-admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		_ = cp.Stop()
		return nil, fmt.Errorf("adding an admin user: %w", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		_ = cp.Stop()
		return nil, err
	}
	cp.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(cp.Kubeconfig, kc, 0o600); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	if cp.Client, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		_ = cp.Stop()
		return nil, err
	}
	return cp, nil
}

// Stop stops the control plane.
func (c *ControlPlane) Stop() error {
	err := c.Env.Stop()
	for _, l := range c.logs {
		_ = l.Close()
	}
	return err
}

// EnsureNamespace creates a namespace if it is missing.
func (c *ControlPlane) EnsureNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := c.Client.Create(ctx, ns); err != nil && !strings.Contains(err.Error(), "already exists") {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// RunKubectl runs kubectl against the control plane and returns its output.
func (c *ControlPlane) RunKubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.Kubectl, append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// WriteAgentTLS waits for the Secret the policy reconciler makes for a
// policy's agents (the CA certificate; agents make their own serving keys
// and the manager certifies them through their Leases) and writes it into
// dir, as the kubelet would mount it.
func (c *ControlPlane) WriteAgentTLS(ctx context.Context, namespace, policy, dir string) error {
	name := agentset.AgentCASecretName(policy)
	var s corev1.Secret
	for {
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &s)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for Secret %s/%s: %w", namespace, name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, pki.CACertKey), s.Data[pki.CACertKey], 0o600)
}

// Process is a binary running in the background with its output in a log file.
type Process struct {
	Name    string
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
	err     error
}

// StartProcess starts bin with args, logging to logDir/name.log (appended,
// so a restarted process keeps one log).
func StartProcess(name, logDir, bin string, args []string, env []string) (*Process, error) {
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(logFile, "\n=== %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, so that stopping it stops its children too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, Cmd: cmd, LogPath: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to end, at most timeout.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("%s did not exit within %s", p.Name, timeout)
	}
}

// Stop sends SIGTERM and waits; after grace it kills the process.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return nil
	}
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGTERM)
	if err := p.Wait(grace); err == nil || p.Exited() {
		return nil
	}
	p.Kill()
	return fmt.Errorf("%s ignored SIGTERM for %s and was killed", p.Name, grace)
}

// Kill sends SIGKILL, as a crash of the node or an OOM kill would.
func (p *Process) Kill() {
	_ = syscall.Kill(-p.Cmd.Process.Pid, syscall.SIGKILL)
	_ = p.Wait(10 * time.Second)
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	return TailFile(p.LogPath, n)
}

// TailFile returns the last n lines of a file.
func TailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log at %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitFor polls cond until it returns true or ctx ends.
func WaitFor(ctx context.Context, interval time.Duration, cond func() (bool, error)) error {
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return errors.Join(ctx.Err(), last)
		case <-time.After(interval):
		}
	}
}
