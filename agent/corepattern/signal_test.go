package corepattern

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

const (
	// childEnv, when set, makes the test binary act as an agent whose
	// core_pattern file is the variable's value.
	childEnv     = "COREDOG_COREPATTERN_TEST_CHILD"
	childPattern = "/var/lib/coredog/cores/core.%h.%e.%P.%s.%t"
	childReady   = "ready"
)

// childMain is the shape the agent's main must have: a signal context, Set,
// then Restore deferred so that it runs whether the context is cancelled by
// SIGTERM or the agent stops for any other reason. (os.Exit and SIGKILL skip
// it; nothing can help there.)
func childMain(sysctlPath string) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	m := New(sysctlPath, logr.Discard())
	if err := m.Set(childPattern); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, m.Restore()) }()

	fmt.Println(childReady)
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(30 * time.Second):
		return errors.New("no signal came")
	}
}

func TestRestoreOnSIGTERM(t *testing.T) {
	if p := os.Getenv(childEnv); p != "" {
		if err := childMain(p); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}

	p := sysctlFile(t, "core\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestRestoreOnSIGTERM$", "-test.count=1")
	// GORACE: a race-enabled child otherwise sleeps a second at exit.
	cmd.Env = append(os.Environ(), childEnv+"="+p, "GORACE=atexit_sleep_ms=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}

	sc := bufio.NewScanner(stdout)
	ready := false
	for !ready && sc.Scan() {
		ready = sc.Text() == childReady
	}
	if !ready {
		_ = cmd.Wait()
		t.Fatalf("child never became ready; stderr: %s", stderr.String())
	}
	if got := readFile(t, p); got != childPattern {
		t.Errorf("while the child runs, file = %q, want %q", got, childPattern)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v; stderr: %s", err, stderr.String())
	}
	if got := readFile(t, p); got != "core" {
		t.Errorf("after the child exited, file = %q, want %q", got, "core")
	}
}
