package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the demo's whole flow in-process, as `make demo` does:
// the real manager and agent binaries (built here from this tree, so they
// never lag behind it), an envtest control plane, a real crash, and a read
// back of the stored dump. run returns nil only when the dump was Uploaded,
// attributed to the pod, and decompressed to exactly the bytes on disk.

// demoTimeout bounds one demo; it usually takes well under 20 seconds.
const demoTimeout = 2 * time.Minute

func TestDemoWithFileStorage(t *testing.T) {
	o := demoOptions(t)
	out := runDemo(t, o)
	for _, want := range []string{
		"$ kubectl apply -f config/crd/bases",
		"coredumppolicy.coredog.io/default created",
		"CoreDump core-",
		"Uploaded",
		"CoreDumped   pod/crashy-0",
		"verified: ",
		"removed " + o.WorkDir,
		// The agent runs as deployed: with the host's PIDs.
		"--proc-root /proc ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the transcript lacks %q", want)
		}
	}
	// kubectl get coredumps shows the dump attributed to the pod and container.
	if !regexp.MustCompile(`core-\S+\s+demo\s+crashy-0\s+app\s+crashy\s+SIGSEGV\s+\S+\s+Uploaded`).MatchString(out) {
		t.Error("kubectl get coredumps does not show the dump Uploaded and attributed to demo/crashy-0, container app")
	}
	left, _ := os.ReadDir(o.WorkDir)
	if len(left) != 0 {
		t.Errorf("the demo left %d entries in its work directory", len(left))
	}
}

// TestDemoWithS3 needs versitygw, whose first build takes about a minute
// (hack/versitygw.sh), so it runs only with COREDOG_TEST_S3=1.
func TestDemoWithS3(t *testing.T) {
	if os.Getenv("COREDOG_TEST_S3") != "1" {
		t.Skip("set COREDOG_TEST_S3=1 to run the demo against versitygw (hack/versitygw.sh builds it once, in about a minute)")
	}
	o := demoOptions(t)
	o.S3 = true
	out := runDemo(t, o)
	for _, want := range []string{"created bucket demo-bucket", "s3://demo-bucket/demo/crashy-0/", "read back from versitygw over S3", "verified: "} {
		if !strings.Contains(out, want) {
			t.Errorf("the transcript lacks %q", want)
		}
	}
}

// TestDemoReportsTheFailedStepAndLogs breaks the manager on purpose and
// checks that the demo names the step, shows the logs and stops everything.
func TestDemoReportsTheFailedStepAndLogs(t *testing.T) {
	o := demoOptions(t)
	bin := t.TempDir()
	// A manager that exits at once, as one with a bad flag would.
	if err := os.WriteFile(filepath.Join(bin, "manager"), []byte("#!/bin/sh\necho 'manager: broken on purpose' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(o.BinDir, "agent"), filepath.Join(bin, "agent")); err != nil {
		t.Fatal(err)
	}
	o.BinDir = bin
	var out syncBuffer
	o.Out = &out
	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	err := run(ctx, o)
	t.Log(out.String())
	if err == nil {
		t.Fatal("run succeeded with a manager that exits at once")
	}
	msg := err.Error()
	if !strings.Contains(msg, "step 3/7 (Manager, policy and agent)") || !strings.Contains(msg, "manager exited unexpectedly") {
		t.Errorf("error %q does not name step 3 and the manager's exit", msg)
	}
	for _, want := range []string{"FAILED at step 3/7", "manager.log (last 30 lines)", "manager: broken on purpose", "rm -rf "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the failure report lacks %q", want)
		}
	}
}

// demoOptions builds the binaries and returns options for one run.
func demoOptions(t *testing.T) options {
	t.Helper()
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run with `make test`, or KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test ./hack/demo/")
	}
	if _, err := exec.LookPath("gcc"); err != nil {
		t.Fatal("gcc is needed to build the crashing program")
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return options{Repo: repo, BinDir: buildBinaries(t, repo), Assets: assets, WorkDir: t.TempDir()}
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// buildBinaries builds bin/manager and bin/agent into a directory of its
// own once per test binary.
func buildBinaries(t *testing.T, repo string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "coredog-demo-bin-")
		if buildErr != nil {
			return
		}
		for _, cmd := range []string{"manager", "agent"} {
			c := exec.Command("go", "build", "-trimpath", "-o", filepath.Join(binDir, cmd), "./cmd/"+cmd)
			c.Dir = repo
			c.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := c.CombinedOutput(); err != nil {
				buildErr = &buildError{cmd: cmd, err: err, out: string(out)}
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
	os.Exit(code)
}

type buildError struct {
	cmd string
	err error
	out string
}

func (e *buildError) Error() string {
	return "go build ./cmd/" + e.cmd + ": " + e.err.Error() + "\n" + e.out
}

// runDemo runs the demo and returns its transcript, failing the test when it fails.
func runDemo(t *testing.T, o options) string {
	t.Helper()
	var out syncBuffer
	o.Out = &out
	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	start := time.Now()
	err := run(ctx, o)
	t.Logf("demo took %s; transcript:\n%s", time.Since(start).Round(100*time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	return out.String()
}

// syncBuffer is a bytes.Buffer safe for the demo's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
