// Command manager runs CoreDog's controllers: it turns CoreDumpPolicies into
// node agents and CoreDumps into stored, attributed dumps.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime/debug"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coredog/coredog/controllers"
	"github.com/coredog/coredog/controllers/upload"
)

// gcPercent is the manager's GOGC unless the environment sets one. While it
// uploads, its live heap is mostly long-lived part buffers (reused from one
// upload to the next) and the informer caches, and it allocates little per
// byte streamed, so collecting at half the heap's size costs little CPU and
// keeps the resident set nearer the live heap than twice it.
const gcPercent = 50

func main() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

func run() error {
	o := controllers.Options{}
	flag.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8443", "Address of the metrics endpoint (HTTPS; callers need get on the /metrics URL); 0 turns it off.")
	var secureMetrics bool
	flag.BoolVar(&secureMetrics, "metrics-secure", true,
		"Serve metrics over HTTPS to authenticated, authorized callers only; false serves plain HTTP to anyone (tests on loopback only).")
	flag.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "Address of the health and readiness probes.")
	flag.BoolVar(&o.LeaderElection, "leader-elect", false, "Elect a leader, so that only one replica reconciles.")
	flag.StringVar(&o.Namespace, "namespace", envOr("POD_NAMESPACE", controllers.DefaultNamespace), "Namespace the controller works in: agents, Secrets and CoreDumps live there.")
	flag.StringVar(&o.AgentImage, "agent-image", os.Getenv("AGENT_IMAGE"), "Agent image for policies that name none (normally the manager's own image).")
	flag.StringVar(&o.AgentServiceAccount, "agent-service-account", controllers.DefaultAgentServiceAccount, "ServiceAccount the agents run as.")
	flag.IntVar(&o.MaxConcurrentUploads, "max-concurrent-uploads", controllers.DefaultMaxConcurrentUploads, "Dumps streamed into storage at once.")
	flag.StringVar(&o.ClusterName, "cluster-name", "", "Cluster name shown in notifications.")
	flag.IntVar(&o.MaxUploadAttempts, "max-upload-attempts", controllers.DefaultMaxUploadAttempts, "Failed upload attempts (with capped exponential backoff) before a dump is Failed.")
	flag.DurationVar(&o.UploadStallTimeout, "upload-stall-timeout", upload.DefaultStallTimeout,
		"An upload attempt that makes no progress for this long (a store or an agent that hangs) is given up and retried.")
	var pprofAddr string
	flag.StringVar(&pprofAddr, "pprof-bind-address", "",
		"Address of the Go profiling endpoints (/debug/pprof/); empty turns them off. They are unauthenticated: bind them to localhost.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	o.InsecureMetrics = !secureMetrics
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&zapOpts)))

	if o.AgentImage == "" {
		return fmt.Errorf("--agent-image (or AGENT_IMAGE) is required")
	}
	// --kubeconfig is controller-runtime's own flag, which its config
	// package registers on flag.CommandLine; GetConfig reads it (then
	// $KUBECONFIG, then in-cluster). Defining it here again panics.
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	mopts := controllers.ManagerOptions(controllers.NewScheme(), o)
	mopts.PprofBindAddress = pprofAddr
	mgr, err := ctrl.NewManager(cfg, mopts)
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	if err := controllers.Setup(mgr, o); err != nil {
		return err
	}
	ctrl.Log.Info("Starting manager", "namespace", o.Namespace, "agentImage", o.AgentImage)
	return mgr.Start(ctrl.SetupSignalHandler())
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
