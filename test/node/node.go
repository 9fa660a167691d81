package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/test/localcluster"
)

// The node's addresses and names.
const (
	NodeName = "coredog-node"
	// HostIP is the host's end of the veth, NodeIP the node's NIC.
	HostIP = "10.213.0.1"
	NodeIP = "10.213.0.2"
	// PodCIDR is the CNI bridge's range; ServiceIP is the kubernetes
	// Service's address, DNATed to the API server.
	PodCIDR       = "10.214.0.0/24"
	ServiceCIDR   = "10.96.0.0/24"
	ServiceIP     = "10.96.0.1"
	APIServerPort = 6443
	// PauseImage is containerd's sandbox image; it must be imported.
	PauseImage = "registry.k8s.io/pause:3.10"

	hostVeth    = "cdn-host"
	kubeletName = "kubelet"
	ipAdd       = "add"
	ipLink      = "link"
	nodeVeth    = "cdn-node"
)

// coveredDirs are paths the kubelet, containerd and CNI write whatever
// their configuration says: the node's mount namespace puts a tmpfs over
// each, so nothing lands on the host. A missing one is made (and recorded)
// as a mount point.
var coveredDirs = []string{"/run/mount", "/var/log/containers", "/var/log/pods", "/var/lib/kubelet", "/var/lib/cni", "/run/netns", "/run/containerd", "/opt/cni", "/opt/containerd"}

// kubeletKernelDefaults are the values the kubelet requires with
// protectKernelDefaults; where the machine's differ, the node's mount
// namespace shows the kubelet a file holding the expected value instead.
var kubeletKernelDefaults = map[string]string{
	"/proc/sys/vm/overcommit_memory":      "1",
	"/proc/sys/vm/panic_on_oom":           "0",
	"/proc/sys/kernel/panic":              "10",
	"/proc/sys/kernel/panic_on_oops":      "1",
	"/proc/sys/kernel/keys/root_maxkeys":  "1000000",
	"/proc/sys/kernel/keys/root_maxbytes": "25000000",
}

// Options configure Start.
type Options struct {
	// Assets holds etcd, kube-apiserver, kubectl, kube-controller-manager,
	// kube-scheduler and kubelet (hack/envtest.sh --node).
	Assets string
	// Log receives progress lines.
	Log func(string, ...any)
}

// Node is a running node and its control plane.
type Node struct {
	State *State
	// Dir is the run's directory (StateRoot/run); LogDir holds every
	// component's log.
	Dir, LogDir string
	// Kubeconfig is an admin's kubeconfig (system:masters) reaching the API
	// server from the host; Config and Client are the same in Go.
	Kubeconfig string
	Config     *rest.Config
	Client     client.Client
	// Kubectl is the kubectl binary.
	Kubectl string
	// ContainerdSock is containerd's socket.
	ContainerdSock string

	holder *exec.Cmd
	pki    *pki
	procs  map[string]*localcluster.Process
	order  []string
	log    func(string, ...any)
	assets string
}

// HolderPID is the process that holds the node's namespaces.
func (n *Node) HolderPID() int { return n.holder.Process.Pid }

// Start sets the node up on a State from Begin. On error the caller still
// calls Stop, which ends whatever started.
func Start(ctx context.Context, s *State, o Options) (*Node, error) {
	n := &Node{State: s, Dir: filepath.Join(StateRoot, "run"), log: o.Log, assets: o.Assets,
		procs: map[string]*localcluster.Process{}, Kubectl: filepath.Join(o.Assets, "kubectl")}
	n.LogDir = filepath.Join(n.Dir, "logs")
	for _, d := range []string{n.Dir, n.LogDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return n, err
		}
	}
	for _, c := range []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", kubeletName, "kubectl"} {
		if _, err := os.Stat(filepath.Join(o.Assets, c)); err != nil {
			return n, fmt.Errorf("%s is missing from %s: run hack/envtest.sh --node", c, o.Assets)
		}
	}
	for _, c := range []string{"/usr/bin/containerd", "/usr/sbin/runc", "/usr/bin/ctr", "/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"} {
		if _, err := os.Stat(c); err != nil {
			return n, fmt.Errorf("%s is missing: run hack/node-packages.sh (containerd, runc, containernetworking-plugins, iptables)", c)
		}
	}
	steps := []struct {
		name string
		f    func(context.Context) error
	}{
		{"namespaces", n.startNamespaces},
		{"network", n.setupNetwork},
		{"certificates", n.writePKI},
		{"control plane", n.startControlPlane},
		{"containerd", n.startContainerd},
		{"kubelet", n.startKubelet},
	}
	for _, st := range steps {
		t0 := time.Now()
		if err := st.f(ctx); err != nil {
			return n, fmt.Errorf("%s: %w", st.name, err)
		}
		n.log("node: %s ready in %s", st.name, time.Since(t0).Round(time.Millisecond))
	}
	return n, nil
}

// record adds a started process to the state.
func (n *Node) record(name string, pid int) error {
	st, ok := procStart(pid)
	if !ok {
		return fmt.Errorf("%s (pid %d) ended at once", name, pid)
	}
	n.State.Procs = append(n.State.Procs, Proc{Name: name, PID: pid, Start: st})
	return n.State.save()
}

// startNamespaces starts the holder: a process in a new mount and network
// namespace that mounts tmpfs over coveredDirs and the kernel defaults,
// then sleeps. Every component joins its namespaces with nsenter.
func (n *Node) startNamespaces(context.Context) error {
	var script strings.Builder
	script.WriteString("set -e\nip link set lo up\n")
	for _, d := range coveredDirs {
		if _, err := os.Stat(d); err != nil {
			if err := mkdirRecorded(n.State, d); err != nil {
				return err
			}
		}
		fmt.Fprintf(&script, "mount -n -t tmpfs -o mode=0755 coredog-node %s\n", d)
	}
	kdir := filepath.Join(n.Dir, "sysctl")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return err
	}
	for path, want := range kubeletKernelDefaults {
		have, err := readKernel(path)
		if err != nil || have == want {
			continue
		}
		f := filepath.Join(kdir, strings.ReplaceAll(strings.TrimPrefix(path, "/proc/sys/"), "/", "."))
		if err := os.WriteFile(f, []byte(want+"\n"), 0o444); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount -n --bind %s %s\n", f, path)
	}
	script.WriteString("echo ready\nexec sleep 2147483647\n")
	cmd := exec.Command("unshare", "--mount", "--net", "--propagation", "private", "--", "/bin/sh", "-c", script.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(n.LogDir, "holder.log"))
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	if err := cmd.Start(); err != nil {
		return err
	}
	n.holder = cmd
	if err := n.record("namespaces", cmd.Process.Pid); err != nil {
		return err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "ready" {
		return fmt.Errorf("the namespace holder did not start (%v): %s", err, localcluster.TailFile(logf.Name(), 20))
	}
	return nil
}

// mkdirRecorded makes a directory and each missing parent, recording each
// before it is made.
func mkdirRecorded(s *State, dir string) error {
	var missing []string
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append([]string{d}, missing...)
	}
	for _, d := range missing {
		s.CreatedDirs = append(s.CreatedDirs, d)
		if err := s.save(); err != nil {
			return err
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// inNode runs a command in the node's namespaces and returns its output.
func (n *Node) inNode(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--target", strconv.Itoa(n.HolderPID()), "--mount", "--net", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// setupNetwork links the host to the node with a veth pair and gives the
// node what kube-proxy would: the kubernetes Service's address DNATed to
// the API server.
func (n *Node) setupNetwork(ctx context.Context) error {
	if _, err := os.Stat("/sys/class/net/" + hostVeth); err == nil {
		return fmt.Errorf("a link %s exists already on the host; an earlier run's? (ip link del %s)", hostVeth, hostVeth)
	}
	n.State.HostVeth = hostVeth
	if err := n.State.save(); err != nil {
		return err
	}
	pid := strconv.Itoa(n.HolderPID())
	host := [][]string{
		{"ip", ipLink, ipAdd, hostVeth, "type", "veth", "peer", "name", nodeVeth},
		{"ip", ipLink, "set", nodeVeth, "netns", pid},
		{"ip", "addr", ipAdd, HostIP + "/24", "dev", hostVeth},
		{"ip", ipLink, "set", hostVeth, "up"},
	}
	for _, c := range host {
		if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %w: %s", strings.Join(c, " "), err, out)
		}
	}
	dnat := "--to-destination=" + NodeIP + ":" + strconv.Itoa(APIServerPort)
	node := [][]string{
		{"ip", "addr", ipAdd, NodeIP + "/24", "dev", nodeVeth},
		{"ip", ipLink, "set", nodeVeth, "up"},
		{"ip", "route", ipAdd, "default", "via", HostIP},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"iptables", "-t", "nat", "-A", "PREROUTING", "-d", ServiceIP, "-p", "tcp", "--dport", "443", "-j", "DNAT", dnat},
		{"iptables", "-t", "nat", "-A", "OUTPUT", "-d", ServiceIP, "-p", "tcp", "--dport", "443", "-j", "DNAT", dnat},
	}
	for _, c := range node {
		if _, err := n.inNode(ctx, c...); err != nil {
			return err
		}
	}
	return nil
}

// startProcess starts a component in the node's namespaces.
func (n *Node) startProcess(name, bin string, args ...string) (*localcluster.Process, error) {
	return n.StartInNode(name, bin, nil, args...)
}

// StartInNode starts a long-running process (a component, an S3 server) in
// the node's namespaces, with env added to its environment; Stop ends it
// with the node.
func (n *Node) StartInNode(name, bin string, env []string, args ...string) (*localcluster.Process, error) {
	full := append([]string{"--target", strconv.Itoa(n.HolderPID()), "--mount", "--net", "--", bin}, args...)
	p, err := localcluster.StartProcess(name, n.LogDir, "nsenter", full, env)
	if err != nil {
		return nil, err
	}
	if err := n.record(name, p.Cmd.Process.Pid); err != nil {
		p.Kill()
		return nil, err
	}
	n.procs[name] = p
	n.order = append(n.order, name)
	return p, nil
}

// Process returns a started component by name (etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd, kubelet).
func (n *Node) Process(name string) *localcluster.Process { return n.procs[name] }

// pki holds the run's certificate files.
type pki struct {
	ca                                   *certAuthority
	apiserver, kubeletClient, kubeletTLS keyPair
	saKey, saPub                         string
	kubeconfigs                          map[string]string
}

// writePKI makes the CA, the serving certificates and a kubeconfig per
// client.
func (n *Node) writePKI(context.Context) error {
	dir := filepath.Join(n.Dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA(dir)
	if err != nil {
		return err
	}
	p := &pki{ca: ca, kubeconfigs: map[string]string{}}
	ips := []net.IP{net.ParseIP(NodeIP), net.ParseIP(ServiceIP), net.ParseIP("127.0.0.1")}
	if p.apiserver, err = ca.issue(dir, "apiserver", "kube-apiserver", nil, ips,
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "localhost"}); err != nil {
		return err
	}
	if p.kubeletClient, err = ca.issue(dir, "apiserver-kubelet-client", "kube-apiserver-kubelet-client", []string{"system:masters"}, nil, nil); err != nil {
		return err
	}
	if p.kubeletTLS, err = ca.issue(dir, "kubelet-serving", "system:node:"+NodeName, []string{"system:nodes"}, []net.IP{net.ParseIP(NodeIP)}, []string{NodeName}); err != nil {
		return err
	}
	if p.saKey, p.saPub, err = writeServiceAccountKey(dir); err != nil {
		return err
	}
	clients := []struct{ name, cn, org string }{
		{"admin", "coredog-node-admin", "system:masters"},
		{"kube-controller-manager", "system:kube-controller-manager", ""},
		{"kube-scheduler", "system:kube-scheduler", ""},
		{"kubelet", "system:node:" + NodeName, "system:nodes"},
	}
	for _, c := range clients {
		var orgs []string
		if c.org != "" {
			orgs = []string{c.org}
		}
		kp, err := ca.issue(dir, c.name, c.cn, orgs, nil, nil)
		if err != nil {
			return err
		}
		path := filepath.Join(n.Dir, c.name+".kubeconfig")
		if err := writeKubeconfig(path, ca.CertFile, kp); err != nil {
			return err
		}
		p.kubeconfigs[c.name] = path
	}
	n.Kubeconfig = p.kubeconfigs["admin"]
	cfg, err := clientcmd.BuildConfigFromFlags("", n.Kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 50, 100
	n.Config = cfg
	if n.Client, err = client.New(cfg, client.Options{Scheme: scheme.New()}); err != nil {
		return err
	}
	n.pki = p
	return nil
}

func writeKubeconfig(path, caFile string, kp keyPair) error {
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: node
  cluster:
    server: https://%s:%d
    certificate-authority: %s
users:
- name: user
  user:
    client-certificate: %s
    client-key: %s
contexts:
- name: node
  context: {cluster: node, user: user}
current-context: node
`, NodeIP, APIServerPort, caFile, kp.CertFile, kp.KeyFile)
	return os.WriteFile(path, []byte(kc), 0o600)
}

func (n *Node) startControlPlane(ctx context.Context) error {
	p := n.pki
	bin := func(c string) string { return filepath.Join(n.assets, c) }
	if _, err := n.startProcess("etcd", bin("etcd"),
		"--data-dir", filepath.Join(n.Dir, "etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--unsafe-no-fsync"); err != nil {
		return err
	}
	if _, err := n.startProcess("kube-apiserver", bin("kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--secure-port", strconv.Itoa(APIServerPort), "--advertise-address", NodeIP,
		"--cert-dir", filepath.Join(n.Dir, "apiserver"),
		"--tls-cert-file", p.apiserver.CertFile, "--tls-private-key-file", p.apiserver.KeyFile,
		"--client-ca-file", p.ca.CertFile,
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true",
		"--service-cluster-ip-range", ServiceCIDR,
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p.saPub, "--service-account-signing-key-file", p.saKey,
		"--kubelet-client-certificate", p.kubeletClient.CertFile, "--kubelet-client-key", p.kubeletClient.KeyFile,
		"--kubelet-certificate-authority", p.ca.CertFile,
		"--kubelet-preferred-address-types", "InternalIP"); err != nil {
		return err
	}
	if err := n.waitAPIServer(ctx); err != nil {
		return err
	}
	if _, err := n.startProcess("kube-controller-manager", bin("kube-controller-manager"),
		"--kubeconfig", p.kubeconfigs["kube-controller-manager"],
		"--authentication-kubeconfig", p.kubeconfigs["kube-controller-manager"],
		"--authorization-kubeconfig", p.kubeconfigs["kube-controller-manager"],
		"--bind-address", "127.0.0.1", "--cert-dir", filepath.Join(n.Dir, "kcm"),
		"--use-service-account-credentials",
		"--service-account-private-key-file", p.saKey, "--root-ca-file", p.ca.CertFile,
		"--cluster-signing-cert-file", p.ca.CertFile, "--cluster-signing-key-file", filepath.Join(n.Dir, "pki", "ca.key"),
		"--leader-elect=false"); err != nil {
		return err
	}
	_, err := n.startProcess("kube-scheduler", bin("kube-scheduler"),
		"--kubeconfig", p.kubeconfigs["kube-scheduler"],
		"--authentication-kubeconfig", p.kubeconfigs["kube-scheduler"],
		"--authorization-kubeconfig", p.kubeconfigs["kube-scheduler"],
		"--bind-address", "127.0.0.1", "--cert-dir", filepath.Join(n.Dir, "scheduler"),
		"--leader-elect=false")
	return err
}

// waitAPIServer waits until the API server answers /readyz.
func (n *Node) waitAPIServer(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return localcluster.WaitFor(ctx, 200*time.Millisecond, func() (bool, error) {
		if p := n.procs["kube-apiserver"]; p.Exited() {
			return false, fmt.Errorf("kube-apiserver exited:\n%s", p.Tail(30))
		}
		out, err := n.RunKubectl(ctx, nil, "get", "--raw", "/readyz")
		return err == nil && strings.TrimSpace(out) == "ok", err
	})
}

func (n *Node) startContainerd(ctx context.Context) error {
	dir := filepath.Join(n.Dir, "containerd")
	cniDir := filepath.Join(n.Dir, "cni", "net.d")
	for _, d := range []string{dir, cniDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	n.ContainerdSock = filepath.Join(dir, "containerd.sock")
	cfg := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = %[3]q
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %[6]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), n.ContainerdSock, filepath.Join(dir, "opt"), PauseImage, cniDir)
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	cni := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "coredog-node",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}], "dataDir": %q}
  }]
}
`, PodCIDR, filepath.Join(n.Dir, "cni", "ipam"))
	if err := os.WriteFile(filepath.Join(cniDir, "10-coredog-node.conflist"), []byte(cni), 0o644); err != nil {
		return err
	}
	// Containers inherit containerd's RLIMIT_CORE; sessions start with 0,
	// and a crash must leave a core.
	p, err := n.startProcess("containerd", "/usr/bin/prlimit", "--core=unlimited", "--", "/usr/bin/containerd", "--config", cfgPath)
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	return localcluster.WaitFor(wctx, 100*time.Millisecond, func() (bool, error) {
		if p.Exited() {
			return false, fmt.Errorf("containerd exited:\n%s", p.Tail(30))
		}
		_, err := n.Ctr(wctx, "version")
		return err == nil, err
	})
}

// Ctr runs ctr against the node's containerd, in the k8s.io namespace.
func (n *Node) Ctr(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "ctr", append([]string{"--address", n.ContainerdSock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ImportImage imports an OCI image tarball into the node's containerd.
func (n *Node) ImportImage(ctx context.Context, tarball string) error {
	_, err := n.Ctr(ctx, "images", "import", "--no-unpack=false", tarball)
	return err
}

func (n *Node) startKubelet(ctx context.Context) error {
	p := n.pki
	dir := filepath.Join(n.Dir, "kubelet")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The cgroups the kubelet will make, recorded first when missing so
	// that whatever ends the run kills what runs in them.
	for _, ctrl := range []string{"blkio", "cpu", "cpuacct", "cpuset", "devices", "freezer", "memory", "pids", "systemd", "hugetlb", "net_cls", "net_prio", "perf_event", "unified"} {
		base := filepath.Join("/sys/fs/cgroup", ctrl)
		if _, err := os.Stat(base); err != nil {
			continue
		}
		cg := filepath.Join(base, "kubepods")
		if _, err := os.Stat(cg); err == nil {
			return fmt.Errorf("%s exists already: another kubelet runs on this machine, or a run was killed before it recorded it", cg)
		}
		n.State.CreatedCgroups = append(n.State.CreatedCgroups, cg)
	}
	if err := n.State.save(); err != nil {
		return err
	}
	cfg := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: %q}
authorization: {mode: Webhook}
tlsCertFile: %q
tlsPrivateKeyFile: %q
protectKernelDefaults: true
failSwapOn: false
oomScoreAdj: 0
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%%", "imagefs.available": "1%%", "nodefs.inodesFree": "1%%"}
syncFrequency: 5s
nodeStatusUpdateFrequency: 4s
fileCheckFrequency: 5s
podLogsDir: %q
clusterDomain: cluster.local
serializeImagePulls: false
`, n.ContainerdSock, p.ca.CertFile, p.kubeletTLS.CertFile, p.kubeletTLS.KeyFile, filepath.Join(n.Dir, "pod-logs"))
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	kp, err := n.startProcess(kubeletName, filepath.Join(n.assets, "kubelet"),
		"--config", cfgPath, "--kubeconfig", p.kubeconfigs["kubelet"],
		"--hostname-override", NodeName, "--node-ip", NodeIP,
		"--root-dir", filepath.Join(dir, "root"), "--cert-dir", filepath.Join(dir, "pki"), "--v", "2")
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	return localcluster.WaitFor(wctx, 250*time.Millisecond, func() (bool, error) {
		if kp.Exited() {
			return false, fmt.Errorf("kubelet exited:\n%s", kp.Tail(40))
		}
		var node corev1.Node
		if err := n.Client.Get(wctx, client.ObjectKey{Name: NodeName}, &node); err != nil {
			return false, err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c.Status == corev1.ConditionTrue, fmt.Errorf("node %s: Ready=%s %s", NodeName, c.Status, c.Message)
			}
		}
		return false, nil
	})
}

// RunKubectl runs kubectl as the admin.
func (n *Node) RunKubectl(ctx context.Context, stdin io.Reader, args ...string) (string, error) {
	return n.Run(ctx, stdin, n.Kubectl, args...)
}

// Run runs a client binary (kubectl, helm, kubectl-coredog) with the
// admin's kubeconfig in KUBECONFIG.
func (n *Node) Run(ctx context.Context, stdin io.Reader, bin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+n.Kubeconfig)
	cmd.Stdin = stdin
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, errOut.String())
	}
	return out.String(), nil
}

// Diagnostics is the state worth reading when a test fails: the tails of
// the kubelet's and containerd's logs, the pods, events and nodes.
func (n *Node) Diagnostics(ctx context.Context) string {
	var b strings.Builder
	for _, name := range []string{kubeletName, "containerd", "kube-controller-manager", "kube-scheduler", "kube-apiserver"} {
		if p := n.procs[name]; p != nil {
			fmt.Fprintf(&b, "--- %s log (last 40 lines)\n%s\n", name, p.Tail(40))
		}
	}
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"describe", "pods", "-A"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
	} {
		out, err := n.RunKubectl(ctx, nil, args...)
		fmt.Fprintf(&b, "--- kubectl %s\n%s", strings.Join(args, " "), out)
		if err != nil {
			fmt.Fprintf(&b, "(%v)\n", err)
		}
	}
	return b.String()
}

// Stop ends the node: the kubelet first (so that it starts no container
// again), then every container, containerd and the control plane, then
// Cleanup undoes what the run recorded.
func (n *Node) Stop(ctx context.Context) error {
	var errs []error
	if p := n.procs[kubeletName]; p != nil {
		_ = p.Stop(15 * time.Second)
	}
	if p := n.procs["containerd"]; p != nil && !p.Exited() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if out, err := n.Ctr(sctx, "tasks", "ls", "-q"); err == nil {
			for id := range strings.FieldsSeq(out) {
				_, _ = n.Ctr(sctx, "tasks", "kill", "-s", "SIGKILL", id)
			}
		}
		cancel()
	}
	for _, name := range slices.Backward(n.order) {
		p := n.procs[name]
		if p != nil && p.Name != kubeletName {
			_ = p.Stop(15 * time.Second)
		}
	}
	if n.holder != nil && n.holder.Process != nil {
		_ = n.holder.Process.Kill()
		_ = n.holder.Wait()
	}
	if err := Cleanup(n.State, n.log); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
