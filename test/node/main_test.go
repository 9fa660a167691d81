//go:build nodesuite

package node

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// The suite shares one node. Tests run in file order, one after another:
// each builds on what the one before it installed (install, Observe,
// upgrade to Pipe, crashes, kills, uninstall).

var (
	repoRoot string
	nd       *Node
	bins     struct{ helm, plugin, versitygw string }
	// imagesDir holds the OCI tarballs `make images` writes.
	imagesDir string
	// teardownOnce ends the node exactly once, whichever way the suite ends.
	teardownOnce sync.Once
	teardownErr  error
)

func TestMain(m *testing.M) {
	if os.Getenv(GuardianEnv) != "" {
		os.Exit(RunGuardian())
	}
	flag.Parse()
	ctrllog.SetLogger(logr.Discard())
	os.Exit(runSuite(m))
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "node: "+format+"\n", args...)
}

func runSuite(m *testing.M) (code int) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		logf("KUBEBUILDER_ASSETS is not set: run the suite with `make test-node` (hack/envtest.sh --node builds the binaries)")
		return 1
	}
	var err error
	if repoRoot, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		logf("%v", err)
		return 1
	}
	imagesDir = filepath.Join(repoRoot, "dist", "images")
	if err := buildTools(); err != nil {
		logf("%v", err)
		return 1
	}

	state, err := Begin(logf)
	if err != nil {
		logf("%v", err)
		return 1
	}
	guardianLog := filepath.Join(os.TempDir(), "coredog-node-guardian.log")
	guardian, err := StartGuardian(guardianLog)
	if err != nil {
		logf("starting the guardian: %v", err)
		_ = Cleanup(state, logf)
		return 1
	}
	ctx := context.Background()
	teardown := func() {
		teardownOnce.Do(func() {
			t0 := time.Now()
			if nd != nil {
				teardownErr = nd.Stop(ctx)
			} else {
				teardownErr = Cleanup(state, logf)
			}
			logf("teardown took %s", time.Since(t0).Round(time.Millisecond))
			if teardownErr == nil {
				guardian.Done()
				_ = os.Remove(guardianLog)
			}
		})
	}
	// SIGINT and SIGTERM end the node before the suite goes.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sigs
		logf("%s: tearing the node down", s)
		teardown()
		os.Exit(1)
	}()
	// A test timeout panics in a goroutine of its own, where no defer of
	// this function runs: end the node, with the state worth reading, a
	// minute before that (the guardian covers the panic itself).
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 2*time.Minute {
			time.AfterFunc(d-time.Minute, func() {
				logf("the suite is about to time out (-timeout %s): tearing the node down", d)
				if nd != nil {
					dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					logf("%s", nd.Diagnostics(dctx))
					cancel()
				}
				teardown()
				os.Exit(1)
			})
		}
	}
	defer func() {
		if r := recover(); r != nil {
			logf("panic: %v", r)
			code = 1
		}
		teardown()
		if teardownErr != nil {
			logf("teardown: %v", teardownErr)
			code = 1
		}
	}()

	t0 := time.Now()
	nd, err = Start(ctx, state, Options{Assets: assets, Log: logf})
	if err != nil {
		logf("starting the node: %v", err)
		if nd != nil {
			dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			logf("%s", nd.Diagnostics(dctx))
			cancel()
		}
		return 1
	}
	logf("node Ready in %s", time.Since(t0).Round(time.Millisecond))
	if err := setUp(ctx); err != nil {
		logf("%v", err)
		dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		logf("%s", nd.Diagnostics(dctx))
		cancel()
		return 1
	}
	return m.Run()
}

// buildTools builds helm (hack/helm.sh), versitygw (hack/versitygw.sh)
// and the plugin.
func buildTools() error {
	for _, s := range []struct {
		script string
		dst    *string
	}{{"helm.sh", &bins.helm}, {"versitygw.sh", &bins.versitygw}} {
		cmd := exec.Command(filepath.Join(repoRoot, "hack", s.script))
		cmd.Dir, cmd.Stderr = repoRoot, os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("hack/%s: %w", s.script, err)
		}
		*s.dst = strings.TrimSpace(string(out))
	}
	binDir, err := os.MkdirTemp("", "coredog-node-bin-")
	if err != nil {
		return err
	}
	bins.plugin = filepath.Join(binDir, "kubectl-coredog")
	build := exec.Command("go", "build", "-trimpath", "-o", bins.plugin, "./cmd/kubectl-coredog")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building kubectl-coredog: %w\n%s", err, out)
	}
	return nil
}
