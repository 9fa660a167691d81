package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coredog/coredog/controllers"
	"github.com/coredog/coredog/internal/storage"
)

const (
	testNamespace  = "coredog-system"
	testAgentImage = "ghcr.io/coredog/coredog:test"
)

// The suite runs the real manager, with the options cmd/manager uses, against
// a real kube-apiserver and etcd; assertions read through a client without a
// cache, so they see what the API server has.
var (
	k8s     client.Client
	restCfg *rest.Config
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: this envtest suite needs a kube-apiserver and etcd; run it with `make test`, or with KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test ./controllers/integration/")
		return 1
	}
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.WriteTo(os.Stderr), zap.Level(zapLevel())))
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting envtest:", err)
		return 1
	}
	defer func() {
		if err := env.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping envtest:", err)
		}
	}()
	restCfg = cfg
	scheme := controllers.NewScheme()
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating client:", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, ns := range []string{testNamespace, apiTestNamespace} {
		if err := k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, "creating namespace:", err)
			return 1
		}
	}
	opts := controllers.Options{
		Namespace:              testNamespace,
		AgentImage:             testAgentImage,
		MetricsBindAddress:     "0",
		HealthProbeBindAddress: "0",
	}
	opts.OpenStore = openTestStore
	opts.MaxUploadAttempts = 30
	mgr, err := ctrl.NewManager(cfg, controllers.ManagerOptions(scheme, opts))
	if err != nil {
		fmt.Fprintln(os.Stderr, "creating manager:", err)
		return 1
	}
	if err := controllers.Setup(mgr, opts); err != nil {
		fmt.Fprintln(os.Stderr, "setting up manager:", err)
		return 1
	}
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	code := m.Run()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			fmt.Fprintln(os.Stderr, "manager:", err)
			code = 1
		}
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "manager did not stop within 30s")
		code = 1
	}
	return code
}

// zapLevel keeps the manager's logs quiet unless COREDOG_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("COREDOG_TEST_VERBOSE") != "" {
		return -1
	}
	return 2
}

func clientNegotiator() runtime.NegotiatedSerializer {
	return serializer.NewCodecFactory(controllers.NewScheme()).WithoutConversion()
}

// openTestStore is storage.Open, except that buckets named "flaky" fail the
// next failWrites dump writes, as a store that is away for a while would,
// and buckets named "count" count their writes (countingStore).
func openTestStore(ctx context.Context, loc *storage.Location, creds map[string][]byte) (storage.Store, error) {
	s, err := storage.Open(ctx, loc, creds)
	if err == nil && strings.Contains(loc.Bucket, "count") {
		return countingStore{Store: s}, nil
	}
	if err != nil || !strings.Contains(loc.Bucket, "flaky") {
		return s, err
	}
	return &flakyStore{Store: s}, nil
}

type flakyStore struct{ storage.Store }

func (f *flakyStore) Write(ctx context.Context, key string, r io.Reader, o storage.WriteOptions) (int64, error) {
	if !strings.HasSuffix(key, ".json") && failWrites.Add(-1) >= 0 {
		_, _ = io.Copy(io.Discard, io.LimitReader(r, 64<<10))
		return 0, errors.New("storage unavailable (injected by the test)")
	}
	return f.Store.Write(ctx, key, r, o)
}
