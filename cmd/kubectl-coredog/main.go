// Command kubectl-coredog is CoreDog's kubectl plugin: installed on the PATH
// it runs as `kubectl coredog` and lists, describes, downloads and debugs
// the core dumps CoreDog captured. The commands live in internal/cli.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/coredog/coredog/internal/cli"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run() error {
	// Interrupting a download removes its partial file: the context is
	// cancelled and the command cleans up before returning.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return cli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
}
