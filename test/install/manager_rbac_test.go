package install

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"k8s.io/utils/ptr"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers"
)

// TestManagerRunsUnderItsRBAC runs the manager's controllers as the
// manager's ServiceAccount, with config/rbac installed, against a real API
// server: it must win leader election, sync its caches (a watch it has no
// right to never syncs), reconcile a policy and take a dump as far as its
// agent. The agent's Lease is read at upload; here there is none, so the
// upload must fail for that reason, not for a missing right.
func TestManagerRunsUnderItsRBAC(t *testing.T) {
	ctx, cfg, admin := startCoreDogEnvtest(t)
	must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: defaultNamespace}}))
	installed := 0
	for _, m := range configRBAC(t) {
		switch m.Obj.GetKind() {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding":
			if strings.Contains(m.Obj.GetName(), "manager") {
				must(t, admin.Create(ctx, m.Obj.DeepCopy()))
				installed++
			}
		}
	}
	if installed != 5 {
		t.Fatalf("installed %d of the manager's ServiceAccount, Role, RoleBinding, ClusterRole and ClusterRoleBinding", installed)
	}

	as := rest.CopyConfig(cfg)
	as.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + defaultNamespace + ":" + managerName,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + defaultNamespace, "system:authenticated"},
	}
	o := controllers.Options{Namespace: defaultNamespace, AgentImage: "registry.example.com/coredog:test", LeaderElection: true,
		MetricsBindAddress: "0", HealthProbeBindAddress: "0"}
	mopts := controllers.ManagerOptions(controllers.NewScheme(), o)
	mopts.Metrics = metricsserver.Options{BindAddress: "0"}
	mopts.LeaseDuration, mopts.RenewDeadline, mopts.RetryPeriod = ptr.To(4*time.Second), ptr.To(3*time.Second), ptr.To(500*time.Millisecond)
	mgr, err := ctrl.NewManager(as, mopts)
	if err != nil {
		t.Fatal(err)
	}
	must(t, controllers.Setup(mgr, o))
	mctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	select {
	case <-mgr.Elected():
	case err := <-done:
		t.Fatalf("the manager stopped before it led: %v", err)
	case <-ctx.Done():
		t.Fatal("the manager did not win leader election as its ServiceAccount")
	}
	syncCtx, syncCancel := context.WithTimeout(ctx, 30*time.Second)
	defer syncCancel()
	if !mgr.GetCache().WaitForCacheSync(syncCtx) {
		t.Fatal("the manager's caches did not sync as its ServiceAccount (a list or watch it may not do?)")
	}

	must(t, admin.Create(ctx, &coredogv1.CoreDumpPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p1"},
		Spec:       coredogv1.CoreDumpPolicySpec{HostPath: "/var/lib/coredog/cores", Storage: coredogv1.StorageSpec{URL: "file:///var/lib/coredog-test/store"}},
	}))
	cd := coreDump(defaultNamespace, "core-rbac", "node-a")
	must(t, admin.Create(ctx, cd))
	var msg string
	for msg == "" || !strings.Contains(msg, "finding the agent") {
		if ctx.Err() != nil {
			t.Fatalf("the dump never reached its agent's Lease; last status: %q", msg)
		}
		time.Sleep(100 * time.Millisecond)
		var got coredogv1.CoreDump
		must(t, admin.Get(ctx, client.ObjectKeyFromObject(cd), &got))
		msg = got.Status.Message
	}
	if strings.Contains(msg, "forbidden") || !strings.Contains(msg, "not found") {
		t.Fatalf("reading the agent's Lease failed for another reason than its absence: %q", msg)
	}
}
