package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/test/localcluster"
	"github.com/coredog/coredog/test/testcrash"
)

const (
	ns           = "coredog-system"
	agentImage   = "ghcr.io/coredog/coredog:bench"
	s3SecretName = "bench-s3"
	s3AccessKey  = "coredog-bench"
	s3SecretKey  = "coredog-bench-secret-0123456789"
	s3Region     = "us-east-1"
	stopGrace    = 15 * time.Second
	readyTimeout = 120 * time.Second
	nodeLabel    = "bench.coredog.io/node"
)

// suite is the infrastructure the benchmarks share: the binaries, the
// control plane, the S3 server and the CoreDump tracker. Managers and agents
// are started by each benchmark, so that their memory and CPU figures are
// their own.
type suite struct {
	repo, dir, logDir            string
	managerBin, agentBin, crashy string
	cp                           *localcluster.ControlPlane
	k8s                          client.Client
	s3proc                       *localcluster.Process
	s3port                       int
	// s3tls is versitygw's certificate: the S3 server speaks https, as
	// production endpoints do, and the managers trust it by SSL_CERT_FILE.
	s3tls      *localcluster.LoopbackTLS
	s3dir, vgw string
	s3c        *s3.Client
	tracker    *tracker
	stop       context.CancelFunc
}

// env is nil unless benchmarks were asked for and the setup worked;
// setupErr says why not.
var (
	env      *suite
	setupErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.bench"); f == nil || f.Value.String() == "" {
		// `go test ./...` (make test): nothing to do here.
		os.Exit(m.Run())
	}
	os.Exit(runBenchmarks(m))
}

func runBenchmarks(m *testing.M) int {
	rep.begin()
	s, err := setup()
	if err != nil {
		setupErr = err
		fmt.Fprintln(os.Stderr, "bench: setup failed:", err)
	} else {
		env = s
	}
	code := m.Run()
	if env != nil {
		env.teardown(code == 0)
	}
	rep.end()
	if err := rep.write(); err != nil {
		fmt.Fprintln(os.Stderr, "bench: writing the report:", err)
		if code == 0 {
			code = 1
		}
	}
	return code
}

// need returns the suite; without KUBEBUILDER_ASSETS it skips the
// benchmark, and any other setup failure fails it.
func need(b *testing.B) *suite {
	b.Helper()
	if env == nil {
		if setupErr == nil {
			setupErr = errors.New("no suite")
		}
		if errors.Is(setupErr, errNoAssets) {
			b.Skip(setupErr)
		}
		b.Fatalf("benchmark infrastructure unavailable: %v", setupErr)
	}
	return env
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

var errNoAssets = errors.New("KUBEBUILDER_ASSETS is not set: run `make bench`, or set KUBEBUILDER_ASSETS=$(hack/envtest.sh)")

func setup() (*suite, error) {
	// The tracker's informer logs through controller-runtime.
	ctrllog.SetLogger(logr.Discard())
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		return nil, errNoAssets
	}
	repo, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "coredog-bench-")
	if err != nil {
		return nil, err
	}
	s := &suite{repo: repo, dir: dir, logDir: filepath.Join(dir, "logs")}
	ok := false
	defer func() {
		if !ok {
			s.teardown(false)
		}
	}()

	// The binaries under test, built as `make build` builds them.
	start := time.Now()
	binDir := filepath.Join(dir, "bin")
	build := exec.Command("go", "build", "-trimpath", "-o", binDir+string(filepath.Separator), "./cmd/manager", "./cmd/agent")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building the manager and the agent: %v\n%s", err, out)
	}
	s.managerBin, s.agentBin = filepath.Join(binDir, "manager"), filepath.Join(binDir, "agent")
	rep.addBinary("manager", s.managerBin)
	rep.addBinary("agent", s.agentBin)
	if s.crashy, err = testcrash.Build(binDir, "crashy"); err != nil {
		return nil, err
	}
	logf("built the manager, the agent and the crasher in %s (into %s)", time.Since(start).Round(time.Millisecond), binDir)

	start = time.Now()
	script := exec.Command(filepath.Join(repo, "hack", "versitygw.sh"))
	script.Dir = repo
	script.Stderr = os.Stderr
	out, err := script.Output()
	if err != nil {
		return nil, fmt.Errorf("hack/versitygw.sh: %w", err)
	}
	s.vgw = strings.TrimSpace(string(out))
	logf("versitygw at %s (%s)", s.vgw, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	s.cp, err = localcluster.StartWithOptions(dir, assets, filepath.Join(repo, "config", "crd", "bases"), localcluster.Options{LogDir: s.logDir})
	if err != nil {
		return nil, err
	}
	s.k8s = s.cp.Client
	logf("control plane up in %s", time.Since(start).Round(time.Millisecond))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.cp.EnsureNamespace(ctx, ns, nil); err != nil {
		return nil, err
	}
	if err := s.k8s.Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: s3SecretName, Namespace: ns},
		StringData: map[string]string{storage.KeyAWSAccessKeyID: s3AccessKey, storage.KeyAWSSecretAccessKey: s3SecretKey},
	}); err != nil {
		return nil, fmt.Errorf("creating the storage Secret: %w", err)
	}
	if err := s.startS3(); err != nil {
		return nil, err
	}

	tctx, tstop := context.WithCancel(context.Background())
	s.stop = tstop
	if s.tracker, err = startTracker(tctx, s.cp.Config); err != nil {
		return nil, err
	}

	// Every policy the suite uses, made once with a manager running so that
	// each gets its CA and agent Secret.
	if err := s.createPolicies(ctx); err != nil {
		return nil, err
	}
	ok = true
	return s, nil
}

func (s *suite) teardown(clean bool) {
	if s.stop != nil {
		s.stop()
	}
	if s.s3proc != nil {
		_ = s.s3proc.Stop(stopGrace)
	}
	if s.cp != nil {
		if err := s.cp.Stop(); err != nil {
			logf("stopping the control plane: %v", err)
		}
	}
	if clean {
		_ = os.RemoveAll(s.dir)
	} else {
		logf("logs kept in %s", s.logDir)
	}
}

// startS3 starts versitygw's posix backend on loopback.
func (s *suite) startS3() error {
	var err error
	if s.s3port, err = localcluster.FreePort(); err != nil {
		return err
	}
	s.s3dir = filepath.Join(s.dir, "s3")
	if err := os.MkdirAll(s.s3dir, 0o700); err != nil {
		return err
	}
	if s.s3tls, err = localcluster.NewLoopbackTLS(s.dir); err != nil {
		return err
	}
	p, err := localcluster.StartVersityGW(s.logDir, s.vgw, s.s3port, s.s3dir, s3AccessKey, s3SecretKey, s.s3tls, readyTimeout)
	if err != nil {
		return err
	}
	s.s3proc = p
	s.s3c = s3.New(s3.Options{
		Region:                     s3Region,
		BaseEndpoint:               aws.String(s.s3endpoint()),
		HTTPClient:                 s.s3tls.Client(),
		UsePathStyle:               true,
		Credentials:                credentials.NewStaticCredentialsProvider(s3AccessKey, s3SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	})
	return nil
}

func (s *suite) s3endpoint() string { return fmt.Sprintf("https://127.0.0.1:%d", s.s3port) }

// policySpec is one CoreDumpPolicy of the suite.
type policySpec struct {
	name        string
	s3          bool
	compression coredogv1.Compression
}

// The suite's policies. Each selects its own node label value and has its
// own hostPath, so none conflicts with another.
var policies = func() []policySpec {
	ps := []policySpec{{name: "det"}, {name: "crash-file"}, {name: "crash-s3", s3: true}, {name: "burst", s3: true}, {name: "idle"}}
	for _, st := range []string{"file", "s3"} {
		for _, c := range compressions {
			ps = append(ps, policySpec{name: pipePolicy(st, c), s3: st == "s3", compression: c})
		}
	}
	return ps
}()

var compressions = []coredogv1.Compression{coredogv1.CompressionZstd, coredogv1.CompressionGzip, coredogv1.CompressionNone}

func pipePolicy(store string, c coredogv1.Compression) string {
	return "pipe-" + store + "-" + strings.ToLower(string(c))
}

func (s *suite) policyDir(policy string) string { return filepath.Join(s.dir, "nodes", policy) }
func (s *suite) tlsDir(policy string) string    { return filepath.Join(s.dir, "tls", policy) }
func (s *suite) fileStore(policy string) string { return filepath.Join(s.dir, "store", policy) }
func bucketOf(policy string) string             { return "bench-" + policy }

func (s *suite) storageURL(p policySpec) string {
	if p.s3 {
		return fmt.Sprintf("s3://%s?region=%s&endpoint=%s&use_path_style=true", bucketOf(p.name), s3Region, s.s3endpoint())
	}
	return "file://" + s.fileStore(p.name)
}

func (s *suite) createPolicies(ctx context.Context) error {
	mgr, err := s.startManager("manager-setup")
	if err != nil {
		return err
	}
	defer func() { _ = mgr.Stop(stopGrace) }()
	for _, p := range policies {
		if p.s3 {
			if _, err := s.s3c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(bucketOf(p.name))}); err != nil {
				return fmt.Errorf("creating bucket %s: %w", bucketOf(p.name), err)
			}
		}
		spec := coredogv1.CoreDumpPolicySpec{
			NodeSelector: map[string]string{nodeLabel: p.name},
			HostPath:     filepath.Join(s.policyDir(p.name), "cores"),
			Storage:      coredogv1.StorageSpec{URL: s.storageURL(p), Compression: p.compression},
			// One program crashes over and over here; the default of 5
			// per hour would throttle it.
			Limits: coredogv1.LimitsSpec{RateLimit: coredogv1.RateLimitSpec{Count: ptr.To[int32](100000)}},
		}
		if p.s3 {
			spec.Storage.SecretRef = &coredogv1.SecretReference{Name: s3SecretName}
		}
		if err := s.k8s.Create(ctx, &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: p.name}, Spec: spec}); err != nil {
			return fmt.Errorf("creating policy %s: %w", p.name, err)
		}
	}
	for _, p := range policies {
		if err := s.cp.WriteAgentTLS(ctx, ns, p.name, s.tlsDir(p.name)); err != nil {
			return fmt.Errorf("%w (Secret %s)\n%s", err, agentset.AgentCASecretName(p.name), mgr.Tail(30))
		}
	}
	return nil
}
