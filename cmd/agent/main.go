// Command agent is CoreDog's node agent: it finds complete core files in a
// host directory, describes each in a CoreDump, and serves the files to the
// controller over mutual TLS. It runs in a DaemonSet pod or, for tests and
// the demo, as a plain process (--kubeconfig, --listen 127.0.0.1:0).
package main

import (
	"flag"
	"fmt"
	"os"

	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/internal/scheme"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run() error {
	var cfg app.Config
	cfg.BindFlags(flag.CommandLine)
	kubeconfig := flag.String("kubeconfig", "", "Path to a kubeconfig; default: in-cluster or $KUBECONFIG.")
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrl.SetLogger(log)

	restCfg, err := ctrl.GetConfig()
	if *kubeconfig != "" {
		restCfg, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
	}
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	return app.Run(ctrl.SetupSignalHandler(), cfg, restCfg, scheme.New(), log)
}
