package install

import (
	"context"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
)

// TestAgentTokenWritesOnlyItsNode installs the agents' RBAC and admission
// policy (from config/rbac, and from the chart under another name and
// namespace) into a real API server, and acts as an agent with a token bound
// to a pod on a node, as the kubelet mounts it: the agent can write its own
// node's Lease and CoreDumps, and nothing of another node's, nor the manager's
// leader-election Lease; a token not bound to a pod writes nothing.
func TestAgentTokenWritesOnlyItsNode(t *testing.T) {
	ctx, cfg, admin := startCoreDogEnvtest(t)

	// A node name long enough that agentlease.Name hashes it.
	long := strings.Repeat("a", 60) + "." + strings.Repeat("b", 60) + "." + strings.Repeat("c", 60) + "." + strings.Repeat("d", 60) + ".eeeeeeee"
	for _, n := range []string{"node-a", "node-b", "coredog.io", long} {
		must(t, admin.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}))
	}

	for _, src := range []struct {
		name, namespace, agentSA string
		objs                     []manifest
	}{
		{"config/rbac", defaultNamespace, agentName, configRBAC(t)},
		{"chart", "ops", "dog-agent", mustRender(t, chartRelease, "ops", values(t, "fullnameOverride: dog")).Objects},
	} {
		t.Run(src.name, func(t *testing.T) {
			must(t, admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: src.namespace}}))
			installed := 0
			for _, m := range src.objs {
				switch m.Obj.GetKind() {
				case "ServiceAccount", "Role", "RoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
					if !strings.Contains(m.Obj.GetName(), "agent") {
						continue
					}
					must(t, admin.Create(ctx, m.Obj.DeepCopy()))
					installed++
				}
			}
			if installed != 5 {
				t.Fatalf("%s: installed %d of the agent's ServiceAccount, Role, RoleBinding, policy and binding", src.name, installed)
			}
			agent := func(node string) client.Client {
				t.Helper()
				return agentClient(ctx, t, cfg, src.namespace, src.agentSA, "p1", node)
			}
			onA, onB := agent("node-a"), agent("node-b")

			// The policy takes effect once the API server has loaded it.
			foreign := lease(src.namespace, agentlease.Name("p1", "node-b"), "node-b")
			waitForbidden(ctx, t, "node-a creating node-b's Lease", onA, admin, foreign)

			own := lease(src.namespace, agentlease.Name("p1", "node-a"), "node-a")
			must(t, onA.Create(ctx, own))
			own.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
			must(t, onA.Update(ctx, own))
			// A Lease is held in its writer's node's name: the manager checks
			// the holder against the node it expects.
			own.Spec.HolderIdentity = new("node-b")
			expectForbidden(t, "node-a holding its Lease in node-b's name", onA.Update(ctx, own))
			own.Spec.HolderIdentity = nil
			expectForbidden(t, "node-a's Lease without a holder", onA.Update(ctx, own))
			expectForbidden(t, "node-a creating a Lease held by node-b", onA.Create(ctx, lease(src.namespace, agentlease.Name("p9", "node-a"), "node-b")))

			servingCertificateIsTheManagers(ctx, t, admin, agentClient(ctx, t, cfg, src.namespace, src.agentSA, "p4", "node-a"), src.namespace)

			must(t, onB.Create(ctx, foreign))
			foreign.Spec.HolderIdentity = new("node-a")
			expectForbidden(t, "node-a updating node-b's Lease", onA.Update(ctx, foreign))

			mine := coreDump(src.namespace, "core-0123456789abcdef0123", "node-a")
			must(t, onA.Create(ctx, mine))
			expectForbidden(t, "node-a creating a CoreDump of node-b", onA.Create(ctx, coreDump(src.namespace, "core-0123456789abcdef0124", "node-b")))
			seriesUpdates(ctx, t, admin, onA, onB, mine)
			// A CoreDump is named as agents name them, and carries nothing
			// the manager owns.
			for _, tc := range []struct {
				what string
				edit func(*coredogv1.CoreDump)
			}{
				{"a name of its choosing", func(cd *coredogv1.CoreDump) { cd.Name = "victim-dump" }},
				{"a longer hash", func(cd *coredogv1.CoreDump) { cd.Name = "core-0123456789abcdef012500" }},
				{"a hash with a suffix", func(cd *coredogv1.CoreDump) { cd.Name = "core-0123456789abcdef0125.x" }},
				{"the manager's notified annotation", func(cd *coredogv1.CoreDump) {
					cd.Annotations = map[string]string{coredogv1.AnnotationNotified: "true"}
				}},
				{"the manager's pod label", func(cd *coredogv1.CoreDump) {
					cd.Labels = map[string]string{coredogv1.LabelPod: "web-0"}
				}},
				{"a finalizer", func(cd *coredogv1.CoreDump) { cd.Finalizers = []string{"example.com/hold"} }},
			} {
				cd := coreDump(src.namespace, "core-0123456789abcdef0125", "node-a")
				tc.edit(cd)
				expectForbidden(t, "node-a creating a CoreDump with "+tc.what, onA.Create(ctx, cd))
			}
			withLabels := coreDump(src.namespace, "core-0123456789abcdef0126", "node-a")
			withLabels.Labels = map[string]string{coredogv1.LabelNode: "node-a", coredogv1.LabelPolicy: "p1", "team": "a"}
			must(t, onA.Create(ctx, withLabels))

			// A node named like the manager's Lease suffix still cannot take it.
			onDot := agent("coredog.io")
			must(t, onDot.Create(ctx, lease(src.namespace, agentlease.Name("p1", "coredog.io"), "coredog.io")))
			leader := lease(src.namespace, "coredog-controller.coredog.io", "coredog.io")
			expectForbidden(t, "an agent creating the leader-election Lease", onDot.Create(ctx, leader))

			// Node names too long for "<policy>.<node>" use the hashed form.
			onLong := agent(long)
			hashed := agentlease.Name("p1", long)
			if !strings.Contains(hashed, ".node-") {
				t.Fatalf("agentlease.Name did not hash a %d-character node name: %s", len(long), hashed)
			}
			must(t, onLong.Create(ctx, lease(src.namespace, hashed, long)))
			expectForbidden(t, "node-a creating a hashed Lease name", onA.Create(ctx, lease(src.namespace, agentlease.Name("p2", long), "node-a")))

			// An agent writes only for its own policy: its pod's name (the
			// DaemonSet's) names it. A policy whose name begins like another's
			// ("p1-x") is another policy, and a long name is told apart by
			// its first 43 characters.
			expectForbidden(t, "p1's agent creating p2's Lease", onA.Create(ctx, lease(src.namespace, agentlease.Name("p2", "node-a"), "node-a")))
			otherPolicy := coreDump(src.namespace, "core-0123456789abcdef0127", "node-a")
			otherPolicy.Spec.PolicyName = "p2"
			expectForbidden(t, "p1's agent creating a CoreDump of p2", onA.Create(ctx, otherPolicy))
			onX := agentClient(ctx, t, cfg, src.namespace, src.agentSA, "p1-x", "node-a")
			expectForbidden(t, "p1-x's agent creating a CoreDump of p1", onX.Create(ctx, coreDump(src.namespace, "core-0123456789abcdef0128", "node-a")))
			expectForbidden(t, "p1-x's agent creating p1's Lease", onX.Create(ctx, lease(src.namespace, agentlease.Name("p1", "node-b"), "node-a")))
			must(t, onX.Create(ctx, lease(src.namespace, agentlease.Name("p1-x", "node-a"), "node-a")))
			longPolicy := strings.Repeat("l", 60)
			onLongPolicy := agentClient(ctx, t, cfg, src.namespace, src.agentSA, longPolicy, "node-a")
			longDump := coreDump(src.namespace, "core-0123456789abcdef0129", "node-a")
			longDump.Spec.PolicyName = longPolicy
			must(t, onLongPolicy.Create(ctx, longDump))
			must(t, onLongPolicy.Create(ctx, lease(src.namespace, agentlease.Name(longPolicy, "node-a"), "node-a")))
			// The node and policy labels say what the spec says.
			mislabelled := coreDump(src.namespace, "core-0123456789abcdef012a", "node-a")
			mislabelled.Labels = map[string]string{coredogv1.LabelPolicy: "p2"}
			expectForbidden(t, "node-a labelling its CoreDump with another policy", onA.Create(ctx, mislabelled))
			mislabelled.Labels = map[string]string{coredogv1.LabelNode: "node-b"}
			expectForbidden(t, "node-a labelling its CoreDump with another node", onA.Create(ctx, mislabelled))

			// A token of the ServiceAccount that no pod holds.
			unbound := agentClient(ctx, t, cfg, src.namespace, src.agentSA, "p1", "")
			expectForbidden(t, "a token not bound to a pod", unbound.Create(ctx, lease(src.namespace, agentlease.Name("p3", "node-a"), "node-a")))
		})
	}
}

// servingCertificateIsTheManagers: the serving certificate in an agent's
// Lease is written by the manager, for the Lease's node. The agent keeps
// updating its Lease (as agent/app does: read, change, update) without
// touching it, but cannot set one of its own making when it creates a Lease,
// replace the manager's, or drop it; nor put an oversized request there.
func servingCertificateIsTheManagers(ctx context.Context, t *testing.T, admin, onA client.Client, namespace string) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("manager", now)
	must(t, err)
	_, csr, err := pki.NewAgentKey()
	must(t, err)
	issued, err := ca.SignAgentCSR(csr, "p4", "node-a", now)
	must(t, err)
	// What root on node-a can make: its own CA, a certificate naming node-b.
	own, err := pki.NewCA("forger", now)
	must(t, err)
	forged, err := own.SignAgentCSR(csr, "p4", "node-b", now)
	must(t, err)

	withCert := lease(namespace, agentlease.Name("p4", "node-a"), "node-a")
	withCert.Annotations = map[string]string{agentlease.AnnotationServingCert: string(forged)}
	expectForbidden(t, "node-a creating its Lease with a certificate", onA.Create(ctx, withCert))

	l := lease(namespace, agentlease.Name("p4", "node-a"), "node-a")
	l.Annotations = map[string]string{agentlease.AnnotationServingCSR: string(csr)}
	must(t, onA.Create(ctx, l))
	// The manager answers.
	patch := client.MergeFrom(l.DeepCopy())
	l.Annotations[agentlease.AnnotationServingCert] = string(issued)
	must(t, admin.Patch(ctx, l, patch))

	update := func(edit func(*coordinationv1.Lease)) error {
		var cur coordinationv1.Lease
		must(t, onA.Get(ctx, client.ObjectKeyFromObject(l), &cur))
		cur.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		edit(&cur)
		return onA.Update(ctx, &cur)
	}
	must(t, update(func(cur *coordinationv1.Lease) {
		cur.Annotations[agentlease.AnnotationEndpoint] = "https://10.0.0.1:9443"
	}))
	expectForbidden(t, "node-a replacing the manager's certificate", update(func(cur *coordinationv1.Lease) {
		cur.Annotations[agentlease.AnnotationServingCert] = string(forged)
	}))
	expectForbidden(t, "node-a dropping the manager's certificate", update(func(cur *coordinationv1.Lease) {
		delete(cur.Annotations, agentlease.AnnotationServingCert)
	}))
	expectForbidden(t, "node-a putting a 5000-byte request into its Lease", update(func(cur *coordinationv1.Lease) {
		cur.Annotations[agentlease.AnnotationServingCSR] = strings.Repeat("x", 5000)
	}))
	var got coordinationv1.Lease
	must(t, admin.Get(ctx, client.ObjectKeyFromObject(l), &got))
	if got.Annotations[agentlease.AnnotationServingCert] != string(issued) {
		t.Errorf("the certificate in node-a's Lease is not the manager's any more")
	}
}

// seriesUpdates: an agent counts crashes in the series of its own node's
// CoreDump after the manager has put its finalizer, labels and annotations
// on it; it cannot change those, and another node's agent cannot write the
// series at all.
func seriesUpdates(ctx context.Context, t *testing.T, admin, onA, onB client.Client, mine *coredogv1.CoreDump) {
	t.Helper()
	must(t, admin.Get(ctx, client.ObjectKeyFromObject(mine), mine))
	mine.Finalizers = []string{coredogv1.FinalizerCleanup}
	mine.Labels = map[string]string{coredogv1.LabelNode: "node-a", coredogv1.LabelPod: "web-0"}
	mine.Annotations = map[string]string{coredogv1.AnnotationPodUID: "u1"}
	must(t, admin.Update(ctx, mine))
	t.Cleanup(func() {
		var cur coredogv1.CoreDump
		if admin.Get(context.Background(), client.ObjectKeyFromObject(mine), &cur) == nil {
			cur.Finalizers = nil
			_ = admin.Update(context.Background(), &cur)
		}
	})
	now := metav1.NewTime(time.Now().Truncate(time.Second))
	count := func(c client.Client, n int64, edit func(*coredogv1.CoreDump)) error {
		var cur coredogv1.CoreDump
		must(t, admin.Get(ctx, client.ObjectKeyFromObject(mine), &cur))
		orig := cur.DeepCopy()
		cur.Series = &coredogv1.CoreDumpSeries{Count: n, FirstObserved: now, LastObserved: now}
		if edit != nil {
			edit(&cur)
		}
		return c.Patch(ctx, &cur, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
	}
	must(t, count(onA, 1, nil))
	must(t, count(onA, 7, nil))
	expectForbidden(t, "node-b counting on node-a's CoreDump", count(onB, 8, nil))
	for _, tc := range []struct {
		what string
		edit func(*coredogv1.CoreDump)
	}{
		{"dropping the manager's finalizer", func(cd *coredogv1.CoreDump) { cd.Finalizers = nil }},
		{"changing the manager's pod label", func(cd *coredogv1.CoreDump) { cd.Labels[coredogv1.LabelPod] = "web-1" }},
		{"adding a label", func(cd *coredogv1.CoreDump) { cd.Labels["team"] = "a" }},
		{"dropping the manager's annotations", func(cd *coredogv1.CoreDump) { cd.Annotations = nil }},
		{"adding the manager's notified annotation", func(cd *coredogv1.CoreDump) { cd.Annotations[coredogv1.AnnotationNotified] = "true" }},
	} {
		expectForbidden(t, "node-a counting on its CoreDump and "+tc.what, count(onA, 9, tc.edit))
	}
	var cur coredogv1.CoreDump
	must(t, admin.Get(ctx, client.ObjectKeyFromObject(mine), &cur))
	if cur.Series == nil || cur.Series.Count != 7 || len(cur.Finalizers) != 1 || cur.Labels[coredogv1.LabelPod] != "web-0" {
		t.Errorf("after the refused writes the CoreDump has series %+v, finalizers %v, labels %v; want count 7 and the manager's metadata", cur.Series, cur.Finalizers, cur.Labels)
	}
}

// agentClient returns a client that authenticates with a token of the agent's
// ServiceAccount bound to a new pod on node, as the kubelet mounts it; with
// node "" the token is bound to nothing.
// agentClient is a client with a token of the agent ServiceAccount bound to
// a pod on node named as the DaemonSet of policy names its pods (none when
// node is "").
func agentClient(ctx context.Context, t *testing.T, cfg *rest.Config, namespace, sa, policy, node string) client.Client {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: new(int64(3600))}}
	if node != "" {
		pod, err := cs.CoreV1().Pods(namespace).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "coredog-agent-" + policy + "-", Namespace: namespace},
			Spec: corev1.PodSpec{
				ServiceAccountName: sa, NodeName: node,
				Containers: []corev1.Container{{Name: "agent", Image: "ghcr.io/coredog/coredog:test"}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		req.Spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("TokenRequest for %s/%s: %v", namespace, sa, err)
	}
	c, err := client.New(&rest.Config{
		Host:            cfg.Host,
		TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData},
		BearerToken:     tr.Status.Token,
	}, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// lease is a Lease held in the name of node, as agents write them.
func lease(namespace, name, node string) *coordinationv1.Lease {
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Spec: coordinationv1.LeaseSpec{HolderIdentity: new(node)}}
}

func coreDump(namespace, name, node string) *coredogv1.CoreDump {
	return &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: coredogv1.CoreDumpSpec{
			PolicyName: "p1", NodeName: node, FileName: "core.web-0.server.4242.11.1767225600",
			Size: 4096, DetectedBy: coredogv1.DetectedByWatch, DetectedAt: metav1.Now(),
			Process: coredogv1.ProcessInfo{Executable: "server", Signal: 11, SignalName: "SIGSEGV", HostPID: 4242},
		},
	}
}

// expectForbidden checks that the API server refused a request with the
// policy's Forbidden, not for another reason (RBAC, validation).
func expectForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: allowed", what)
		return
	}
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
		t.Errorf("%s: refused, but not by the admission policy: %v", what, err)
	}
}

// waitForbidden creates obj as c until the admission policy refuses it (the
// API server loads a new policy within a second or so); what was created
// meanwhile is deleted again by admin.
func waitForbidden(ctx context.Context, t *testing.T, what string, c, admin client.Client, obj client.Object) {
	t.Helper()
	var err error
	for ctx.Err() == nil {
		err = c.Create(ctx, obj.DeepCopyObject().(client.Object))
		if err != nil && apierrors.IsForbidden(err) && strings.Contains(err.Error(), "ValidatingAdmissionPolicy") {
			return
		}
		if err == nil {
			must(t, admin.Delete(ctx, obj.DeepCopyObject().(client.Object)))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: the admission policy never refused it; last result: %v", what, err)
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
