// Package app wires the node agent's parts into one process: detection,
// description, the disk guard, CoreDump creation with retries, the dump
// endpoint, the Lease heartbeat, core_pattern management and metrics. The
// parts themselves live in their own packages; this one owns their order
// and the agent's side of the CoreDump life cycle (create, then delete the
// local file once the dump is Uploaded, Skipped or deleted). It never reads
// storage credentials or CoreDumpPolicies: everything it needs comes from
// its flags.
package app

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/coredog/coredog/agent/budget"
	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/nodeguard"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Config is everything the agent is told.
type Config struct {
	NodeName  string
	Policy    string
	Namespace string
	// Dir is the host directory the kernel writes cores into.
	Dir             string
	FileNamePattern string
	// ProcRoot is the host's /proc; "" turns PID and cgroup checks off.
	ProcRoot string
	// Listen is the dump endpoint's address; AdvertiseAddress the host put in the Lease.
	Listen           string
	AdvertiseAddress string
	TLSDir           string
	CorePattern      string
	SysctlPath       string
	MetricsAddr      string
	// InsecureMetrics serves metrics over plain HTTP to anyone (tests only).
	InsecureMetrics bool
	HealthAddr      string
	PollInterval    time.Duration
	SettleTime      time.Duration
	DisableWatch    bool
	// DisableAnalysis turns off unwinding the threads of each core at
	// capture (status.analysis is Unavailable then).
	DisableAnalysis bool
	// HostRoot is the host's root file system, where the binaries of a host
	// process (one in no container) are read for the analysis; default:
	// <ProcRoot>/1/root.
	HostRoot     string
	MaxNodeUsage string
	MinNodeFree  string
	MaxParallel  int
	// LeaseRenew is how often the agent renews its Lease.
	LeaseRenew time.Duration
	// ReceiverBinary is the binary installed as the kernel's pipe handler in
	// Pipe mode; default: this program.
	ReceiverBinary string
	// CutQuietTime is how long a core shorter than its program headers say
	// must stay still, with no process to check, before it is taken as cut;
	// 0 means detect.DefaultCutQuietFactor × SettleTime.
	CutQuietTime time.Duration
	// NodeBurst, NodePerMinute, SignatureBurst and SignaturePerHour are the
	// creation budget (the policy's spec.limits.coreDumps).
	NodeBurst        int
	NodePerMinute    int
	SignatureBurst   int
	SignaturePerHour int
}

// BindFlags registers the agent's flags.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.NodeName, "node-name", "", "Name of the node the agent runs on.")
	fs.StringVar(&c.Policy, "policy", "", "Name of the CoreDumpPolicy this agent serves.")
	fs.StringVar(&c.Namespace, "namespace", "coredog-system", "The controller's namespace, where CoreDumps and the agent's Lease live.")
	fs.StringVar(&c.Dir, "dir", coredogv1.DefaultHostPath, "Directory the kernel writes cores into.")
	fs.StringVar(&c.FileNamePattern, "file-name-pattern", coredogv1.DefaultFileNamePattern, "core_pattern file name, with % specifiers.")
	fs.StringVar(&c.ProcRoot, "proc-root", "/proc", "The host's /proc (the agent runs with hostPID); empty turns PID and cgroup checks off.")
	fs.StringVar(&c.Listen, "listen", ":9443", "Address of the dump endpoint (mTLS), e.g. 127.0.0.1:0.")
	fs.StringVar(&c.AdvertiseAddress, "advertise-address", "", "Host or IP the controller reaches the endpoint at; default: the listen host, or 127.0.0.1.")
	fs.StringVar(&c.TLSDir, "tls-dir", "/etc/coredog/tls", "Directory with ca.crt, the policy's CA certificate (the serving key is made at start and kept in memory).")
	fs.StringVar(&c.CorePattern, "core-pattern", string(coredogv1.CorePatternObserve),
		"Observe; Manage: set kernel.core_pattern to dir/file-name-pattern; or Pipe: install this binary under dir and pipe cores to it. "+
			"Manage and Pipe restore the old value on exit.")
	fs.StringVar(&c.SysctlPath, "sysctl-path", "/proc/sys/kernel/core_pattern", "The core_pattern file written in Manage mode.")
	fs.StringVar(&c.MetricsAddr, "metrics-bind-address", ":8443", "Address of the metrics endpoint (HTTPS; callers need get on the /metrics URL); 0 turns it off.")
	fs.BoolFunc("metrics-secure", "Serve metrics over HTTPS to authenticated, authorized callers only (default true); false serves plain HTTP to anyone (tests on loopback only).",
		func(v string) error {
			secure, err := strconv.ParseBool(v)
			c.InsecureMetrics = !secure
			return err
		})
	fs.StringVar(&c.HealthAddr, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz; 0 turns it off.")
	fs.DurationVar(&c.PollInterval, "poll-interval", 10*time.Second, "Polling fallback period; 0 polls only when watching fails.")
	fs.DurationVar(&c.SettleTime, "settle-time", 2*time.Second, "Quiet time that marks a file complete when its process cannot be checked.")
	fs.DurationVar(&c.CutQuietTime, "cut-quiet-time", 0,
		"Quiet time after which a core shorter than its ELF headers say is taken as cut, when its process cannot be checked; default 10 × --settle-time.")
	fs.BoolVar(&c.DisableWatch, "disable-watch", false, "Find files by polling alone (for filesystems where inotify is unreliable).")
	fs.BoolVar(&c.DisableAnalysis, "disable-analysis", false, "Do not unwind the threads of each core at capture.")
	fs.StringVar(&c.HostRoot, "host-root", "", "The host's root file system, where host processes' binaries are read for backtraces; default: <proc-root>/1/root.")
	fs.StringVar(&c.MaxNodeUsage, "max-node-usage", "10Gi", "Most disk that cores may use on the node; 0 for no limit.")
	fs.StringVar(&c.MinNodeFree, "min-node-free", "5%", "Free space to leave on the node: a size (2Gi) or a percentage (5%).")
	fs.IntVar(&c.MaxParallel, "max-parallel-downloads", 4, "Concurrent dump downloads served.")
	fs.DurationVar(&c.LeaseRenew, "lease-renew-interval", 10*time.Second, "How often the agent renews its Lease.")
	fs.IntVar(&c.NodeBurst, "node-burst", int(coredogv1.DefaultNodeBurst), "CoreDumps the agent may create at once; past the budget crashes are counted on an existing CoreDump.")
	fs.IntVar(&c.NodePerMinute, "node-per-minute", int(coredogv1.DefaultNodePerMinute), "CoreDumps the agent may create a minute once its burst is spent.")
	fs.IntVar(&c.SignatureBurst, "signature-burst", int(coredogv1.DefaultSignatureBurst),
		"CoreDumps one container (or hostname) and crash signature may have at once.")
	fs.IntVar(&c.SignaturePerHour, "signature-per-hour", int(coredogv1.DefaultSignaturePerHour),
		"CoreDumps one container (or hostname) and crash signature may have an hour once its burst is spent.")
}

// settings are Config parsed into the forms the parts take.
type settings struct {
	pattern *corefile.Pattern
	limits  nodeguard.Limits
	budget  budget.Limits
}

// validate checks the configuration and parses what needs parsing.
func (c *Config) validate() (settings, error) {
	var s settings
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name is required"))
	}
	if c.Policy == "" {
		errs = append(errs, errors.New("--policy is required"))
	}
	if c.Namespace == "" {
		errs = append(errs, errors.New("--namespace is required"))
	}
	if !filepath.IsAbs(c.Dir) {
		errs = append(errs, fmt.Errorf("--dir %q must be an absolute path", c.Dir))
	}
	p, err := corefile.ParsePattern(c.FileNamePattern)
	if err != nil {
		errs = append(errs, fmt.Errorf("--file-name-pattern: %w", err))
	}
	s.pattern = p
	switch coredogv1.CorePatternMode(c.CorePattern) {
	case coredogv1.CorePatternObserve, coredogv1.CorePatternManage, coredogv1.CorePatternPipe:
	default:
		errs = append(errs, fmt.Errorf("--core-pattern %q: want Observe, Manage or Pipe", c.CorePattern))
	}
	if c.SettleTime <= 0 {
		errs = append(errs, errors.New("--settle-time must be positive"))
	}
	if c.PollInterval < 0 {
		errs = append(errs, errors.New("--poll-interval must not be negative"))
	}
	if c.CutQuietTime < 0 {
		errs = append(errs, errors.New("--cut-quiet-time must not be negative"))
	}
	if c.MaxNodeUsage != "" {
		q, err := resource.ParseQuantity(c.MaxNodeUsage)
		if err != nil || q.Sign() < 0 {
			errs = append(errs, fmt.Errorf("--max-node-usage %q: want a size such as 10Gi", c.MaxNodeUsage))
		} else {
			s.limits.MaxUsage = q.Value()
		}
	}
	if c.MinNodeFree != "" {
		b, pct, err := nodeguard.ParseMinFree(c.MinNodeFree)
		if err != nil {
			errs = append(errs, fmt.Errorf("--min-node-free: %w", err))
		}
		s.limits.MinFree, s.limits.MinFreePercent = b, pct
	}
	if c.LeaseRenew <= 0 {
		c.LeaseRenew = 10 * time.Second
	}
	// Zero is a Config built in code without the flags: the API's defaults.
	nodeBurst := cmp.Or(c.NodeBurst, int(coredogv1.DefaultNodeBurst))
	nodePerMinute := cmp.Or(c.NodePerMinute, int(coredogv1.DefaultNodePerMinute))
	sigBurst := cmp.Or(c.SignatureBurst, int(coredogv1.DefaultSignatureBurst))
	sigPerHour := cmp.Or(c.SignaturePerHour, int(coredogv1.DefaultSignaturePerHour))
	if nodeBurst < 1 || nodePerMinute < 1 || sigBurst < 1 || sigPerHour < 1 {
		errs = append(errs, errors.New("--node-burst, --node-per-minute, --signature-burst and --signature-per-hour must be positive"))
	} else {
		s.budget = budget.Limits{
			NodeBurst: nodeBurst, NodeInterval: time.Minute / time.Duration(nodePerMinute),
			KeyBurst: sigBurst, KeyInterval: time.Hour / time.Duration(sigPerHour),
		}
	}
	return s, errors.Join(errs...)
}
