package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/coredog/coredog/agent/app"
	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentclient"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/storage"
)

// BenchmarkProfilePipeline is the pipeline's data path in one process, for
// CPU profiles: the agent's dump endpoint (serve.NewServer, mTLS), the
// controller's client (agentclient, which checks the stream against the
// agent's trailers)
// and the store (storage.Open and Write), on a 1 GiB dense core-like file
// (COREDOG_BENCH_MIB to change), without the API server, detection or
// process boundaries. It runs only with COREDOG_BENCH_PROFILE=1, so that
// `make bench` skips it:
//
//	COREDOG_BENCH_PROFILE=1 KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test -run '^$' \
//	  -bench 'ProfilePipeline/none/file' -benchtime 1x -cpuprofile cpu.out ./test/bench/
//	go tool pprof -top test/bench/bench.test cpu.out
func BenchmarkProfilePipeline(b *testing.B) {
	if os.Getenv("COREDOG_BENCH_PROFILE") == "" {
		b.Skip("set COREDOG_BENCH_PROFILE=1 to run the in-process profile of the data path")
	}
	s := need(b)
	size := int64(1 << 30)
	if v, err := strconv.Atoi(os.Getenv("COREDOG_BENCH_MIB")); err == nil && v > 0 {
		size = int64(v) << 20
	}
	const policy = "profile"
	dir := b.TempDir()
	now := time.Now()
	ca, err := pki.NewCA("profile-ca", now)
	if err != nil {
		b.Fatal(err)
	}
	const node = "profile-node"
	id, err := serve.NewIdentity(policy, node)
	if err != nil {
		b.Fatal(err)
	}
	certPEM, err := ca.SignAgentCSR(id.CSR(), policy, node, now)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := id.Accept(certPEM, ca.CertPEM, now); err != nil {
		b.Fatal(err)
	}
	tlsDir := filepath.Join(dir, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tlsDir, pki.CACertKey), ca.CertPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	reg := serve.NewRegistry()
	srv, err := serve.NewServer(serve.Options{Registry: reg, Logger: logr.Discard(), TLSDir: tlsDir, Identity: id}, "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx := b.Context()
	go func() { _ = srv.Serve(ctx) }()
	host, port, _ := net.SplitHostPort(srv.Addr())
	p, _ := strconv.Atoi(port)
	endpoint := agentlease.Endpoint(host, p)
	creds, err := agentclient.NewCredentials(policy, ca, now)
	if err != nil {
		b.Fatal(err)
	}
	ac, err := agentclient.New(creds)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "core")
	if _, err := writeCoreLike(path, size, false, 42); err != nil {
		b.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		b.Fatal(err)
	}
	reg.Add(serve.Entry{Name: "core-profile", Path: path, Device: uint64(st.Dev), Inode: st.Ino, Size: size}) //nolint:unconvert

	for _, c := range compressions {
		for _, store := range []string{"file", "s3"} {
			b.Run(strings.ToLower(string(c))+"/"+store, func(b *testing.B) {
				url := "file://" + filepath.Join(dir, "store")
				var sc map[string][]byte
				if store == "s3" {
					url = s.storageURL(policySpec{name: "pipe-s3-zstd", s3: true})
					sc = map[string][]byte{storage.KeyAWSAccessKeyID: []byte(s3AccessKey), storage.KeyAWSSecretAccessKey: []byte(s3SecretKey)}
					// The store trusts the system roots, as the manager
					// does; Go reads them, once, on first use.
					b.Setenv("SSL_CERT_FILE", s.s3tls.CertFile)
				}
				loc, err := storage.ParseURL(url)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(size)
				for i := 0; i < b.N; i++ {
					st, err := storage.Open(ctx, loc, sc)
					if err != nil {
						b.Fatal(err)
					}
					stream, err := ac.Fetch(ctx, endpoint, node, "core-profile", c, size)
					if err != nil {
						b.Fatal(err)
					}
					key := "profile/" + strconv.Itoa(i) + "-" + string(c)
					if _, err := st.Write(ctx, key, stream, storage.WriteOptions{}); err != nil {
						b.Fatal(err)
					}
					stream.Close()
					_ = st.Delete(ctx, key)
					st.Close()
				}
			})
		}
	}
}

// BenchmarkProfileIdleAgent runs the agent in this process (agent/app.Run,
// as cmd/agent runs it) on a directory of idleFiles files, waits until it
// has captured them all, and writes a heap profile of what it holds then
// (COREDOG_BENCH_HEAPPROFILE, default heap-idle-agent.out in the temporary
// directory), plus a second one after a minute of idling. Like
// BenchmarkProfilePipeline it runs only with COREDOG_BENCH_PROFILE=1.
func BenchmarkProfileIdleAgent(b *testing.B) {
	if os.Getenv("COREDOG_BENCH_PROFILE") == "" {
		b.Skip("set COREDOG_BENCH_PROFILE=1 to run the in-process profile of an idle agent")
	}
	s := need(b)
	const policy = "idle"
	dir := filepath.Join(b.TempDir(), "cores")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, idleFileSize)
	for i := range idleFiles {
		name := fmt.Sprintf("core.prof-%d.app.%d.11.1767225600", i, 3_000_000+i)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	cfg := app.Config{
		NodeName: "profile-idle", Policy: policy, Namespace: ns,
		Dir: dir, FileNamePattern: coredogv1.DefaultFileNamePattern, ProcRoot: filepath.Join(s.dir, "empty-proc"),
		Listen: "127.0.0.1:0", TLSDir: s.tlsDir(policy), CorePattern: string(coredogv1.CorePatternObserve),
		MetricsAddr: "0", HealthAddr: "0", PollInterval: idlePoll, SettleTime: 2 * time.Second,
		MaxNodeUsage: "0", MinNodeFree: "0%", MaxParallel: 4, LeaseRenew: 10 * time.Second,
		NodeBurst: 100000, SignatureBurst: 100000,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	// The scheme cmd/agent gives it, so that the heap is the binary's.
	go func() { done <- app.Run(ctx, cfg, s.cp.Config, app.NewScheme(), logr.Discard()) }()
	defer func() {
		cancel()
		<-done
		_ = within(5*time.Minute, func(ctx context.Context) error { return s.purge(ctx, policy) })
	}()
	if err := within(10*time.Minute, func(ctx context.Context) error {
		return s.tracker.wait(ctx, func() (bool, error) {
			n := 0
			for _, d := range s.tracker.byName {
				if d.Node == cfg.NodeName {
					n++
				}
			}
			return n >= idleFiles, nil
		})
	}); err != nil {
		b.Fatal(err)
	}
	out := os.Getenv("COREDOG_BENCH_HEAPPROFILE")
	if out == "" {
		out = filepath.Join(os.TempDir(), "heap-idle-agent.out")
	}
	for _, when := range []string{"captured", "idle"} {
		if when == "idle" {
			time.Sleep(idleWindow)
		}
		runtime.GC()
		f, err := os.Create(strings.TrimSuffix(out, ".out") + "-" + when + ".out")
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.WriteHeapProfile(f); err != nil {
			b.Fatal(err)
		}
		f.Close()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		logf("idle agent in process, %s: heap in use %.1f MiB (whole test process), profile %s", when, mibOf(int64(ms.HeapInuse)), f.Name())
	}
}
