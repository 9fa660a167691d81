package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"

	"github.com/coredog/coredog/agent/budget"
	"github.com/coredog/coredog/agent/corepattern"
	"github.com/coredog/coredog/agent/detect"
	"github.com/coredog/coredog/agent/modstore"
	"github.com/coredog/coredog/agent/nodeguard"
	"github.com/coredog/coredog/agent/receive"
	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// captureWorkers is how many files are described and recorded at once.
const captureWorkers = 4

// Agent is one running node agent.
type Agent struct {
	cfg      Config
	set      settings
	log      logr.Logger
	client   *kubeClient
	registry *serve.Registry
	guard    *nodeguard.Guard
	detector *detect.Detector
	metrics  *metrics
	pending  *retryQueue
	// dumps follows this node's CoreDumps; set before the heartbeat starts.
	dumps *dumpWatch

	// cgroups holds what /proc/<pid>/cgroup said when a file was first
	// seen, until the file is captured.
	cgMu    sync.Mutex
	cgroups map[string]string

	// budget decides which crashes get a CoreDump (guarded by budgetMu);
	// series writes the counts of the others; creating holds the names
	// whose create is under way.
	budgetMu sync.Mutex
	budget   *budget.Budget
	series   *seriesWriter
	creating sync.Map

	ready chan struct{}
	// captures says how long the running captures have taken, for /healthz.
	captures captureWatch
	// endpoint is the URL published in the Lease, known once the server
	// listens; it is published only while identity holds a certificate.
	endpoint string
	// modules holds the module files receivers collected (Pipe mode); nil
	// in Observe and Manage.
	modules *modstore.Store
	// identity is the serving key and the certificate the manager issued.
	identity *serve.Identity
	// certErr is the last refused certificate's error, to log it once.
	certErr string
	// published: the Lease names the agent's endpoint, the last renewal
	// having found a valid serving certificate. The agent is ready then,
	// and not before: the manager dials no agent whose Lease names none.
	published atomic.Bool
}

// Run starts the agent and blocks until ctx is done. On return, a managed
// core_pattern has been restored. scheme must know CoreDumps and Leases;
// NewScheme has those alone.
func Run(ctx context.Context, cfg Config, restCfg *rest.Config, scheme *runtime.Scheme, log logr.Logger) error {
	set, err := cfg.validate()
	if err != nil {
		return err
	}
	if fi, err := os.Stat(cfg.Dir); err != nil || !fi.IsDir() {
		return fmt.Errorf("--dir %s: not a readable directory (%v)", cfg.Dir, err)
	}
	restCfg = rest.CopyConfig(restCfg)
	if restCfg.QPS == 0 {
		// A burst of crashes means a burst of creates; client-go's default
		// of 5 per second would queue them for many seconds.
		restCfg.QPS, restCfg.Burst = 50, 100
	}
	c, err := newKubeClient(restCfg, scheme, log.WithName("client"))
	if err != nil {
		return fmt.Errorf("creating API client: %w", err)
	}
	reg := prometheus.NewRegistry()
	a := &Agent{
		cfg:      cfg,
		set:      set,
		log:      log,
		client:   c,
		registry: serve.NewRegistry(),
		metrics:  newMetrics(reg),
		cgroups:  map[string]string{},
		ready:    make(chan struct{}),
	}
	a.metrics.describe(cfg, set)
	a.pending = newRetryQueue(a.createCoreDump, log)
	a.budget = budget.New(set.budget)
	a.series = &seriesWriter{
		client: c, ns: cfg.Namespace, node: cfg.NodeName, policy: cfg.Policy, log: log.WithName("series"),
		gone: a.budgetGone, latest: a.budgetLatest, creating: a.isCreating, pending: map[string]*tally{},
	}
	guardOpts := nodeguard.Options{Dir: cfg.Dir, Limits: set.limits}
	if cfg.CorePattern == string(coredogv1.CorePatternPipe) {
		// Cores the receivers are still writing count with the admitted ones.
		guardOpts.InFlight = func() int64 {
			n, _ := receive.InFlight(cfg.Dir, receive.DefaultMaxReceivers)
			return n
		}
	}
	a.guard = nodeguard.NewGuard(guardOpts)

	if restore, err := a.setCorePattern(); err != nil {
		return err
	} else if restore != nil {
		defer func() {
			if err := restore(); err != nil {
				log.Error(err, "Restoring core_pattern")
			}
		}()
	}

	if cfg.CorePattern == string(coredogv1.CorePatternPipe) {
		if a.modules, err = openModuleStore(cfg, set); err != nil {
			return err
		}
		defer a.modules.Close()
	}

	var hostPID func(string) (int64, bool)
	if set.pattern.HasHostPID() {
		hostPID = func(name string) (int64, bool) {
			f, ok := set.pattern.Parse(name)
			return f.HostPID, ok && f.HostPID > 0
		}
	}
	procRoot := cfg.ProcRoot
	if procRoot != "" {
		if _, err := os.Stat(procRoot); err != nil {
			log.Info("The host's /proc is not readable: completeness falls back to the settle time and container IDs are not read", "procRoot", procRoot, "err", err.Error())
			procRoot = ""
		}
	}
	a.cfg.ProcRoot = procRoot
	a.detector, err = detect.New(detect.Options{
		Dir:          cfg.Dir,
		PollInterval: cfg.PollInterval,
		SettleTime:   cfg.SettleTime,
		CutQuietTime: cfg.CutQuietTime,
		DeclaredSize: declaredSize,
		DisableWatch: cfg.DisableWatch,
		ProcRoot:     procRoot,
		HostPID:      hostPID,
		Logger:       log.WithName("detect"),
		OnMode:       a.metrics.setMode,
		OnFound:      func(src detect.Source) { a.metrics.found.WithLabelValues(string(src)).Inc() },
		OnSeen:       a.recordCgroup,
	})
	if err != nil {
		return fmt.Errorf("starting detection: %w", err)
	}

	var modules serve.ModuleOpener
	if a.modules != nil {
		modules = a.modules
	}
	// The serving key is made here and never leaves memory; the manager
	// certifies it for this node through the Lease (see renewLease).
	if a.identity, err = serve.NewIdentity(cfg.Policy, cfg.NodeName); err != nil {
		return err
	}
	server, err := serve.NewServer(serve.Options{
		Modules:     modules,
		Registry:    a.registry,
		Logger:      log.WithName("serve"),
		MaxParallel: cfg.MaxParallel,
		TLSDir:      cfg.TLSDir,
		Identity:    a.identity,
		Metrics:     reg,
	}, cfg.Listen)
	if err != nil {
		return fmt.Errorf("starting the dump endpoint: %w", err)
	}
	a.endpoint, err = advertisedEndpoint(cfg.AdvertiseAddress, server.Addr())
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	goRun := func(name string, f func(context.Context) error) {
		wg.Go(func() {
			if err := f(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		})
	}
	goRun("dump endpoint", server.Serve)
	goRun("metrics endpoint", func(ctx context.Context) error {
		return serveMetrics(ctx, cfg, restCfg, reg, log.WithName("metrics"))
	})
	goRun("health endpoint", func(ctx context.Context) error { return serveHTTP(ctx, cfg.HealthAddr, a.healthHandler()) })

	// Watch this node's CoreDumps first, so that a dump that is already
	// Uploaded when its file is found again (after a restart) is released.
	dumps := newDumpWatch(c, cfg.Namespace, a.nodeSelector(), a.release)
	a.dumps = dumps
	goRun("CoreDump watch", dumps.run)
	select {
	case <-dumps.synced():
	case <-ctx.Done():
		cancel()
		wg.Wait()
		return errors.Join(drain(errs)...)
	}
	a.seedBudget(ctx)
	goRun("lease", a.heartbeat)
	goRun("retries", a.pending.run)
	goRun("series", a.series.run)

	files := make(chan detect.File, 64)
	goRun("detection", func(ctx context.Context) error { return a.detector.Run(ctx, files) })
	// A few captures run at once, so that one slow API call does not hold
	// up the files behind it.
	for worker := range captureWorkers {
		goRun("capture", func(ctx context.Context) error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case f := <-files:
					a.captures.begin(worker, time.Now())
					a.capture(ctx, f)
					a.captures.end(worker)
				}
			}
		})
	}
	close(a.ready)
	log.Info("Agent started", "node", cfg.NodeName, "policy", cfg.Policy, "dir", cfg.Dir, "endpoint", a.endpoint,
		"pattern", cfg.FileNamePattern, "corePattern", cfg.CorePattern)
	<-ctx.Done()
	wg.Wait()
	return errors.Join(drain(errs)...)
}

func drain(errs chan error) []error {
	var out []error
	for {
		select {
		case err := <-errs:
			out = append(out, err)
		default:
			return out
		}
	}
}

func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if d := a.captures.longest(time.Now()); d > maxCaptureTime {
			http.Error(w, fmt.Sprintf("a capture has run for %s", d.Round(time.Second)), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		select {
		case <-a.ready:
			if !a.published.Load() {
				http.Error(w, "waiting for the manager's serving certificate", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok"))
		default:
			http.Error(w, "starting", http.StatusServiceUnavailable)
		}
	})
	return mux
}

// serveHTTP serves h on addr until ctx is done; addr "0" or "" turns it off.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	if addr == "" || addr == "0" {
		return nil
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	return serveUntilDone(ctx, srv, srv.ListenAndServe)
}

// serveUntilDone runs serve (srv's ListenAndServe or Serve) until it fails
// or ctx is done, then shuts srv down, allowing 5 s for requests in flight.
func serveUntilDone(ctx context.Context, srv *http.Server, serve func() error) error {
	errc := make(chan error, 1)
	go func() { errc <- serve() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

func advertisedEndpoint(advertise, listenAddr string) (string, error) {
	host, portStr, err := net.SplitHostPort(listenAddr)
	if err != nil {
		return "", fmt.Errorf("dump endpoint address %q: %w", listenAddr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return "", fmt.Errorf("dump endpoint port %q: %w", portStr, err)
	}
	if advertise == "" {
		advertise = host
		if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
			advertise = "127.0.0.1"
		}
	}
	return endpointURL(advertise, port), nil
}

// nodeSelector selects this agent's CoreDumps by the CRD's selectable fields.
func (a *Agent) nodeSelector() fields.Selector {
	return dumpSelector(a.cfg.NodeName, a.cfg.Policy)
}

// dumpSelector selects the CoreDumps of node under policy. The terms are
// in a fixed order (fields.SelectorFromSet ranges over a map), so that the
// request's query string is the same on every run.
func dumpSelector(node, policy string) fields.Selector {
	return fields.AndSelectors(
		fields.OneTermEqualSelector("spec.nodeName", node),
		fields.OneTermEqualSelector("spec.policyName", policy),
	)
}

// setCorePattern writes kernel.core_pattern in Manage and Pipe modes and
// returns how to put the old value back.
func (a *Agent) setCorePattern() (restore func() error, err error) {
	cfg := a.cfg
	mode := coredogv1.CorePatternMode(cfg.CorePattern)
	if mode != coredogv1.CorePatternManage && mode != coredogv1.CorePatternPipe {
		return nil, nil
	}
	// The values the agent replaces are kept under hostPath as well, so that
	// an agent that is killed before it can restore is followed by one
	// that still restores the administrator's value. The directory is the
	// receiver's: one the agent created, that only root can change. One
	// that someone else made is refused, since whatever it holds becomes
	// core_pattern, which the kernel runs as root.
	inst, err := receive.OpenInstallDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("refusing to set core_pattern (%s): %w", mode, err)
	}
	stateDir := inst.Path()
	_ = inst.Close()
	m := corepattern.New(cfg.SysctlPath, a.log.WithName("corepattern")).WithState(filepath.Join(stateDir, "core_pattern.original"))
	// A pipe to restore is checked in the host's file system, which the
	// agent sees through the host's /proc.
	if root := filepath.Join(cmp.Or(cfg.ProcRoot, "/proc"), "1", "root"); isDir(root) {
		m.WithHelperRoot(root)
	}
	switch mode {
	case coredogv1.CorePatternManage:
		pattern, err := corepattern.Pattern(cfg.Dir, cfg.FileNamePattern)
		if err != nil {
			return nil, fmt.Errorf("core_pattern: %w", err)
		}
		if err := m.Set(pattern); err != nil {
			return nil, err
		}
		a.log.Info("Set kernel.core_pattern", "pattern", pattern, "sysctl", cfg.SysctlPath)
	case coredogv1.CorePatternPipe:
		// Only root may list, read or write where the receiver puts cores
		// (root-owned, 0600): the kubelet creates a hostPath 0755, and no
		// pod is meant to mount it, but a process of any uid on the node
		// could otherwise list which pods crashed.
		if err := os.Chmod(cfg.Dir, 0o700); err != nil {
			return nil, fmt.Errorf("making %s private to root: %w", cfg.Dir, err)
		}
		bin := cfg.ReceiverBinary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				return nil, fmt.Errorf("finding the agent binary to install as the core receiver: %w", err)
			}
		}
		procRoot := cfg.ProcRoot
		if procRoot == "" {
			procRoot = "/proc"
		}
		pattern, err := receive.Install(bin, receive.Config{
			Dir: cfg.Dir, FileNamePattern: cfg.FileNamePattern, MaxBytes: a.set.limits.MaxUsage, ProcRoot: procRoot,
			MaxReceivers: receive.DefaultMaxReceivers, MaxInFlight: a.set.limits.MaxUsage,
			MinFree: a.set.limits.MinFree, MinFreePercent: a.set.limits.MinFreePercent,
		})
		if err != nil {
			return nil, fmt.Errorf("installing the core receiver: %w", err)
		}
		// core_pipe_limit sits beside core_pattern (in /proc/sys/kernel).
		m.WithPipeLimit(filepath.Join(filepath.Dir(cfg.SysctlPath), "core_pipe_limit"))
		if err := m.SetPipe(pattern); err != nil {
			return nil, err
		}
		a.log.Info("Set kernel.core_pattern to pipe cores to the agent's receiver", "pattern", pattern, "sysctl", cfg.SysctlPath)
		return func() error {
			if err := m.Restore(); err != nil {
				// The kernel may still run the receiver: leave it.
				return err
			}
			// The kernel no longer runs the receiver: take it away.
			return receive.Uninstall(cfg.Dir)
		}, nil
	}
	return m.Restore, nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
