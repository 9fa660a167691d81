package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/test/localcluster"
	"github.com/coredog/coredog/test/testcrash"
)

// The suite shares one control plane, one S3 server and one manager; each
// test runs its own agent, with its own policy, node name, directory and
// bucket. Tests run one after another: several of them stop a shared
// process (the manager, the S3 server, the API server) on purpose.

const (
	ns            = "coredog-system"
	agentImage    = "ghcr.io/coredog/coredog:e2e"
	s3SecretName  = "e2e-s3"
	s3AccessKey   = "coredog-e2e"
	s3SecretKey   = "coredog-e2e-secret-0123456789"
	s3Region      = "us-east-1"
	stopGrace     = 15 * time.Second
	readyTimeout  = 60 * time.Second
	uploadTimeout = 90 * time.Second
)

var (
	repoRoot string
	suiteDir string
	logDir   string
	cp       *localcluster.ControlPlane
	k8s      client.Client

	managerBin, agentBin, crasherBin string

	s3srv *s3Server
	s3c   *s3.Client

	manager       *localcluster.Process
	managerHealth int
)

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

func runSuite(m *testing.M) (code int) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the suite with `make test`, which builds the envtest binaries (hack/envtest.sh), or with KUBEBUILDER_ASSETS=$(hack/envtest.sh)")
		return 1
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, "e2e: "+format+"\n", args...)
		return 1
	}
	var err error
	if repoRoot, err = filepath.Abs(filepath.Join("..", "..")); err != nil {
		return fail("%v", err)
	}
	if suiteDir, err = os.MkdirTemp("", "coredog-e2e-"); err != nil {
		return fail("%v", err)
	}
	logDir = filepath.Join(suiteDir, "logs")
	defer func() {
		if code == 0 && os.Getenv("COREDOG_E2E_KEEP") == "" {
			_ = os.RemoveAll(suiteDir)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: the suite's logs are kept in %s\n", logDir)
		}
	}()

	// The binaries under test, built as `make build` does.
	start := time.Now()
	binDir := filepath.Join(suiteDir, "bin")
	build := exec.Command("go", "build", "-trimpath", "-o", binDir+string(filepath.Separator), "./cmd/manager", "./cmd/agent")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fail("building the manager and the agent: %v\n%s", err, out)
	}
	managerBin, agentBin = filepath.Join(binDir, "manager"), filepath.Join(binDir, "agent")
	if crasherBin, err = testcrash.Build(binDir, "crashy"); err != nil {
		return fail("%v", err)
	}
	fmt.Fprintf(os.Stderr, "e2e: built the manager, the agent and the crasher in %s\n", time.Since(start).Round(time.Millisecond))

	// The S3 server, built once into the cache by hack/versitygw.sh.
	start = time.Now()
	script := exec.Command(filepath.Join(repoRoot, "hack", "versitygw.sh"))
	script.Dir = repoRoot
	script.Stderr = os.Stderr
	out, err := script.Output()
	if err != nil {
		return fail("hack/versitygw.sh: %v", err)
	}
	vgw := strings.TrimSpace(string(out))
	fmt.Fprintf(os.Stderr, "e2e: versitygw at %s (hack/versitygw.sh took %s)\n", vgw, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	cp, err = localcluster.StartWithOptions(suiteDir, assets, filepath.Join(repoRoot, "config", "crd", "bases"), localcluster.Options{LogDir: logDir})
	if err != nil {
		return fail("%v", err)
	}
	defer func() {
		if err := cp.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e: stopping the control plane:", err)
		}
	}()
	k8s = cp.Client
	fmt.Fprintf(os.Stderr, "e2e: control plane up in %s\n", time.Since(start).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cp.EnsureNamespace(ctx, ns, nil); err != nil {
		return fail("%v", err)
	}
	if err := k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s3SecretName, Namespace: ns},
		StringData: map[string]string{storage.KeyAWSAccessKeyID: s3AccessKey, storage.KeyAWSSecretAccessKey: s3SecretKey},
	}); err != nil {
		return fail("creating the storage Secret: %v", err)
	}

	port, err := localcluster.FreePort()
	if err != nil {
		return fail("%v", err)
	}
	s3srv = &s3Server{bin: vgw, dir: filepath.Join(suiteDir, "s3"), port: port}
	if err := os.MkdirAll(s3srv.dir, 0o755); err != nil {
		return fail("%v", err)
	}
	if err := s3srv.start(); err != nil {
		return fail("%v", err)
	}
	defer func() { _ = s3srv.proc.Stop(stopGrace) }()
	s3c = s3.New(s3.Options{
		Region:                     s3Region,
		BaseEndpoint:               aws.String(s3srv.endpoint()),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(s3AccessKey, s3SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})

	if managerHealth, err = localcluster.FreePort(); err != nil {
		return fail("%v", err)
	}
	if err := startManager(); err != nil {
		return fail("%v", err)
	}
	defer func() { _ = manager.Stop(stopGrace) }()

	start = time.Now()
	code = m.Run()
	if err := writeReliabilityReport(code == 0, time.Since(start)); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: writing the reliability report:", err)
		code = 1
	}
	return code
}

// startManager starts the manager binary (or starts it again) and waits
// until it answers its readiness probe; extra flags come last and win.
func startManager(extra ...string) error {
	args := []string{
		"--kubeconfig", cp.Kubeconfig,
		"--namespace", ns,
		"--agent-image", agentImage,
		"--metrics-bind-address", "0",
		"--health-probe-bind-address", "127.0.0.1:" + strconv.Itoa(managerHealth),
	}
	args = append(args, extra...)
	p, err := localcluster.StartProcess("manager", logDir, managerBin, args, nil)
	if err != nil {
		return err
	}
	manager = p
	if err := localcluster.WaitReady(p, fmt.Sprintf("http://127.0.0.1:%d/readyz", managerHealth), readyTimeout); err != nil {
		return fmt.Errorf("%w\n%s", err, p.Tail(40))
	}
	return nil
}

// s3Server is versitygw serving a directory through its posix backend.
type s3Server struct {
	bin, dir string
	port     int
	proc     *localcluster.Process
}

func (s *s3Server) endpoint() string { return fmt.Sprintf("http://127.0.0.1:%d", s.port) }

// start starts versitygw on the server's port and directory, and waits until
// it accepts connections.
func (s *s3Server) start() error {
	p, err := localcluster.StartVersityGW(logDir, s.bin, s.port, s.dir, s3AccessKey, s3SecretKey, nil, readyTimeout)
	if err != nil {
		return err
	}
	s.proc = p
	return nil
}
