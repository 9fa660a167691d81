// Command agent is CoreDog's node agent: it finds complete core files in a
// host directory, describes each in a CoreDump, and serves the files to the
// controller over mutual TLS. It runs in a DaemonSet pod or, for tests and
// the demo, as a plain process (--kubeconfig, --listen 127.0.0.1:0).
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"sigs.k8s.io/controller-runtime/pkg/client/config"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager/signals"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/receive"
)

// gcPercent is the agent's GOGC unless the environment sets one. The agent's
// heap is mostly long-lived state about the files it keeps (a few hundred
// bytes each), it allocates little while idle (a rescan allocates next to
// nothing) and little while serving (buffers are reused), so collecting at
// a quarter of the heap's size costs little CPU and keeps the resident set
// near the live heap rather than at twice it. A memory limit (GOMEMLIMIT,
// which the DaemonSet sets from the container's limit) applies on top.
const gcPercent = 25

func main() {
	if len(os.Args) > 1 && os.Args[1] == "receive" {
		// Run by the kernel as the core_pattern pipe handler (corePattern Pipe).
		if err := runReceive(os.Args[2:]); err != nil {
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		writeTerminationMessage(err)
		os.Exit(1)
	}
}

// terminationLog is the file whose contents the kubelet puts into the
// container's status when it ends (terminationMessagePath's default), so that
// why the agent stopped (a refused core directory, say) shows in `kubectl
// describe pod` as well as in its log.
const terminationLog = "/dev/termination-log"

// maxTerminationMessage is the kubelet's limit.
const maxTerminationMessage = 4096

func writeTerminationMessage(err error) {
	// No O_CREATE: outside a pod there is no such file, and none is made.
	f, ferr := os.OpenFile(terminationLog, os.O_WRONLY|os.O_TRUNC|syscall.O_NOFOLLOW, 0)
	if ferr != nil {
		return
	}
	defer f.Close()
	msg := err.Error()
	if len(msg) > maxTerminationMessage {
		msg = msg[:maxTerminationMessage]
	}
	_, _ = f.WriteString(msg)
}

// runReceive takes one core from the kernel. Nobody reads the helper's
// output: receive.Main logs failures to receive.log next to the installed
// binary, in the directory it verifies first.
func runReceive(args []string) error {
	exe, err := os.Executable()
	if err != nil {
		_, _ = io.Copy(io.Discard, os.Stdin)
		return err
	}
	return receive.Main(filepath.Dir(exe), args, os.Stdin)
}

func run() error {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(gcPercent)
	}
	var cfg app.Config
	cfg.BindFlags(flag.CommandLine)
	zapOpts := zap.Options{}
	zapOpts.BindFlags(flag.CommandLine)
	flag.Parse()
	log := zap.New(zap.UseFlagOptions(&zapOpts))
	ctrllog.SetLogger(log)

	// --kubeconfig is controller-runtime's own flag, which its config
	// package registers on flag.CommandLine; GetConfig reads it (then
	// $KUBECONFIG, then in-cluster). Defining it here again panics.
	restCfg, err := config.GetConfig()
	if err != nil {
		return fmt.Errorf("loading kubeconfig: %w", err)
	}
	return app.Run(signals.SetupSignalHandler(), cfg, restCfg, app.NewScheme(), log)
}
