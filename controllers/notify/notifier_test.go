package notify

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/scheme"
)

const ns = "coredog-system"

// clock is a settable clock for the notifier.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

type env struct {
	t     *testing.T
	c     client.Client
	n     *Notifier
	clock *clock
}

func newEnv(t *testing.T, o Options, peers PeersFunc, objs ...client.Object) *env {
	t.Helper()
	c := fake.NewClientBuilder().WithScheme(scheme.New()).WithObjects(objs...).Build()
	clk := &clock{t: testNow}
	if o.BackoffBase == 0 {
		o.BackoffBase, o.BackoffCap = 20*time.Millisecond, 100*time.Millisecond
	}
	o.Now = clk.Now
	n := New(Config{
		Client: c, APIReader: c, Namespace: ns, Cluster: "test-cluster", Options: o, Peers: peers,
		Link: func(_ context.Context, cd *coredogv1.CoreDump, _ *coredogv1.CoreDumpPolicy, expiry time.Duration) (string, time.Time, error) {
			return "https://signed.example/" + cd.Name + "?X-Amz-Signature=1", clk.Now().Add(expiry), nil
		},
	})
	return &env{t: t, c: c, n: n, clock: clk}
}

func (e *env) start() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = e.n.Start(ctx); close(done) }()
	e.t.Cleanup(func() { cancel(); <-done })
}

func (e *env) dump(name string) *coredogv1.CoreDump {
	e.t.Helper()
	var cd coredogv1.CoreDump
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, &cd); err != nil {
		e.t.Fatal(err)
	}
	return &cd
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sinkSecret(name, url string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{"url": []byte(url + "\n")}}
}

func policyWith(sinks ...coredogv1.NotificationSink) *coredogv1.CoreDumpPolicy {
	return &coredogv1.CoreDumpPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       coredogv1.CoreDumpPolicySpec{Storage: coredogv1.StorageSpec{URL: "s3://cores/prod"}, Notifications: sinks},
	}
}

func hook(name string, typ coredogv1.NotificationSinkType) coredogv1.NotificationSink {
	return coredogv1.NotificationSink{Name: name, Type: typ, SecretRef: coredogv1.SinkSecretRef{Name: name, Key: "url"}}
}

func uploadedDump(name string, notify string) *coredogv1.CoreDump {
	cd := &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name),
			Labels: map[string]string{coredogv1.LabelSignature: "0123456789ab"}},
		Spec: coredogv1.CoreDumpSpec{PolicyName: "p", NodeName: "node-1", FileName: "core.x", Size: 1 << 20,
			DetectedAt: metav1.NewTime(testNow), Signature: "0123456789ab",
			Process: coredogv1.ProcessInfo{Executable: "server", Signal: 11, SignalName: "SIGSEGV"}},
		Status: coredogv1.CoreDumpStatus{Phase: coredogv1.PhaseUploaded, Reason: "Uploaded",
			Pod:     &coredogv1.PodReference{Namespace: "shop", Name: "web-0", Container: "app", WorkloadKind: "StatefulSet", WorkloadName: "web"},
			Storage: &coredogv1.StorageStatus{URL: "s3://cores/prod/shop/web-0/" + name + ".zst", Key: "prod/shop/web-0/" + name + ".zst"}},
	}
	if notify != "" {
		cd.Annotations = map[string]string{coredogv1.AnnotationNotify: notify}
	}
	return cd
}

func TestRetriesWithBackoffThenDeliversOnce(t *testing.T) {
	var times []time.Time
	var mu sync.Mutex
	c := newCapture(t, func(w http.ResponseWriter, n int) {
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if n <= 2 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
		}
	})
	p := policyWith(hook("hook", coredogv1.NotificationWebhook))
	e := newEnv(t, Options{}, nil, p, sinkSecret("hook", c.srv.URL+"/hook/tok-secret"), uploadedDump("d1", "hook"))
	e.start()

	stale := e.dump("d1")
	if wait, err := e.n.QueuePending(context.Background(), stale, p); wait != 0 || err != nil {
		t.Fatalf("Reconcile = %v, %v", wait, err)
	}
	eventually(t, "the notification is recorded", func() bool {
		return e.dump("d1").Annotations[coredogv1.AnnotationNotified] == "hook"
	})
	reqs := c.requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3 (two 503s, then success)", len(reqs))
	}
	mu.Lock()
	if g1, g2 := times[1].Sub(times[0]), times[2].Sub(times[1]); g1 < 20*time.Millisecond || g2 < 40*time.Millisecond {
		t.Errorf("retries %v and %v apart; want exponential backoff from 20ms", g1, g2)
	}
	mu.Unlock()
	d := decode(t, reqs[2].body)
	if str(t, d, "downloadURL") != "https://signed.example/d1?X-Amz-Signature=1" || str(t, d, "cluster") != "test-cluster" ||
		str(t, d, "workload") != "StatefulSet/web" || path(t, d, "occurrences") != float64(1) {
		t.Errorf("body %s", reqs[2].body)
	}
	if str(t, d, "downloadURLExpiresAt") != testNow.Add(coredogv1.DefaultLinkExpiry).Format(time.RFC3339) {
		t.Errorf("the link does not expire after the default 1h: %s", str(t, d, "downloadURLExpiresAt"))
	}

	// A re-reconcile, even from a cache that has not seen the record yet, sends nothing more.
	if _, err := e.n.QueuePending(context.Background(), e.dump("d1"), p); err != nil {
		t.Fatal(err)
	}
	if _, err := e.n.QueuePending(context.Background(), stale, p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(c.requests()); n != 3 {
		t.Errorf("%d requests after re-reconciles, want still 3", n)
	}
	if st, reason, _, _ := e.n.Condition(context.Background(), p); st != metav1.ConditionTrue || reason != coredogv1.ReasonSinksReady {
		t.Errorf("condition %s %s", st, reason)
	}
}

func TestGivesUpAndReportsWithoutSecrets(t *testing.T) {
	const token = "tok-very-secret-123"
	c := newCapture(t, func(w http.ResponseWriter, _ int) {
		http.Error(w, "internal error for "+token, http.StatusInternalServerError)
	})
	p := policyWith(hook("hook", coredogv1.NotificationSlack), hook("good", coredogv1.NotificationWebhook))
	good := newCapture(t, nil)
	e := newEnv(t, Options{Attempts: 3}, nil, p, sinkSecret("hook", c.srv.URL+"/services/"+token),
		sinkSecret("good", good.srv.URL), uploadedDump("d1", "good,hook"))
	e.start()
	if _, err := e.n.QueuePending(context.Background(), e.dump("d1"), p); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failure is recorded", func() bool {
		a := e.dump("d1").Annotations
		return a[coredogv1.AnnotationNotifyFailed] == "hook" && a[coredogv1.AnnotationNotified] == "good"
	})
	if n := len(c.requests()); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
	st, reason, msg, ok := e.n.Condition(context.Background(), p)
	if !ok || st != metav1.ConditionFalse || reason != coredogv1.ReasonSinkFailing {
		t.Fatalf("condition %v %s %s", ok, st, reason)
	}
	if !strings.Contains(msg, "sink hook: 3 attempts failed in a row") || !strings.Contains(msg, "500") || strings.Contains(msg, "sink good") {
		t.Errorf("message %q", msg)
	}
	if strings.Contains(msg, token) || strings.Contains(msg, c.srv.URL) {
		t.Errorf("message leaks the URL or token: %q", msg)
	}
	if len(e.n.changes) == 0 {
		t.Error("the policy controller was not nudged")
	}
	// Nothing more is tried for this dump.
	if pending := e.n.pendingSinks(e.dump("d1"), p); len(pending) != 0 {
		t.Errorf("still pending: %v", pending)
	}
	// Fixing the sink's Secret clears the failure before the next notification.
	s := &corev1.Secret{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "hook"}, s); err != nil {
		t.Fatal(err)
	}
	s.Data["url"] = []byte(good.srv.URL)
	if err := e.c.Update(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if st, _, msg, _ := e.n.Condition(context.Background(), p); st != metav1.ConditionTrue {
		t.Errorf("after the fix: %s %s", st, msg)
	}
}

func TestConditionNamesBadSecrets(t *testing.T) {
	ding := hook("ding", coredogv1.NotificationDingTalk)
	ding.SigningSecretRef = &coredogv1.SigningSecretRef{Name: "ding-sign", Key: "secret"}
	p := policyWith(hook("missing", coredogv1.NotificationSlack), hook("nokey", coredogv1.NotificationSlack),
		hook("nothttp", coredogv1.NotificationSlack), ding)
	nokey := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "nokey"}, Data: map[string][]byte{"URL": []byte("https://x")}}
	e := newEnv(t, Options{}, nil, p, nokey, sinkSecret("nothttp", "ftp://hooks.example/SECRETPATH"), sinkSecret("ding", "https://oapi.dingtalk.com/robot/send?access_token=abc"))
	st, reason, msg, _ := e.n.Condition(context.Background(), p)
	if st != metav1.ConditionFalse || reason != coredogv1.ReasonSinkSecretInvalid {
		t.Errorf("condition %s %s", st, reason)
	}
	for _, want := range []string{
		"sink missing: Secret coredog-system/missing does not exist",
		"sink nokey: Secret coredog-system/nokey has no key url",
		"sink nothttp: key url of Secret coredog-system/nothttp is not an absolute http(s) URL",
		"sink ding: Secret coredog-system/ding-sign does not exist",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "SECRETPATH") || strings.Contains(msg, "access_token") {
		t.Errorf("message leaks a URL: %s", msg)
	}
	if _, _, _, ok := e.n.Condition(context.Background(), policyWith()); ok {
		t.Error("a policy without sinks has a condition")
	}
}

func TestQueueIsBounded(t *testing.T) {
	p := policyWith(hook("hook", coredogv1.NotificationWebhook))
	e := newEnv(t, Options{QueueSize: 1}, nil, p, uploadedDump("d1", "hook"), uploadedDump("d2", "hook"))
	// Not started: nothing drains the queue.
	if wait, _ := e.n.QueuePending(context.Background(), e.dump("d1"), p); wait != 0 {
		t.Errorf("first: wait %v", wait)
	}
	if wait, _ := e.n.QueuePending(context.Background(), e.dump("d1"), p); wait != 0 {
		t.Errorf("a job already queued is not queued twice, and not refused: wait %v", wait)
	}
	if wait, _ := e.n.QueuePending(context.Background(), e.dump("d2"), p); wait != queueFullRetry {
		t.Errorf("second: wait %v, want %v", wait, queueFullRetry)
	}
}

func TestMarkDue(t *testing.T) {
	onSkipped := hook("skipped", coredogv1.NotificationSlack)
	onSkipped.On = []coredogv1.NotificationTrigger{coredogv1.NotifyOnSkipped}
	aborts := hook("aborts", coredogv1.NotificationSlack)
	aborts.Signals = []coredogv1.SignalName{"SIGABRT"}
	shop := hook("shop", coredogv1.NotificationSlack)
	shop.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "shop"}}
	other := hook("other", coredogv1.NotificationSlack)
	other.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"team": "other"}}
	p := policyWith(hook("all", coredogv1.NotificationWebhook), onSkipped, aborts, shop, other)
	nsObj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "shop"}}}
	e := newEnv(t, Options{}, nil, nsObj)

	cd := uploadedDump("d1", "")
	e.n.MarkDue(context.Background(), cd, p)
	if got := cd.Annotations[coredogv1.AnnotationNotify]; got != "all,shop" {
		t.Errorf("due at %q, want all,shop", got)
	}
	notSelected := uploadedDump("d2", "")
	notSelected.Status.Phase, notSelected.Status.Reason = coredogv1.PhaseSkipped, coredogv1.ReasonNotSelected
	e.n.MarkDue(context.Background(), notSelected, p)
	if _, ok := notSelected.Annotations[coredogv1.AnnotationNotify]; ok {
		t.Error("a dump the selectors left out is due somewhere")
	}
	cd = uploadedDump("d3", "")
	e.n.MarkDue(context.Background(), cd, policyWith())
	if cd.Annotations != nil {
		t.Error("a policy without sinks marked a dump")
	}
}

func TestThrottledDumpsNotifyOncePerWindow(t *testing.T) {
	c := newCapture(t, nil)
	s := hook("hook", coredogv1.NotificationCloudEvents)
	s.On = []coredogv1.NotificationTrigger{coredogv1.NotifyOnUploaded, coredogv1.NotifyOnSkipped}
	p := policyWith(s)
	p.Spec.Limits.RateLimit = coredogv1.RateLimitSpec{Count: new(int32(1)), Window: &metav1.Duration{Duration: 10 * time.Second}}
	t0 := testNow
	mk := func(name string, sec int, throttled bool) *coredogv1.CoreDump {
		cd := uploadedDump(name, "hook")
		cd.CreationTimestamp = metav1.NewTime(t0.Add(time.Duration(sec) * time.Second))
		if throttled {
			cd.Status.Phase, cd.Status.Reason, cd.Status.Storage = coredogv1.PhaseSkipped, coredogv1.ReasonThrottled, nil
		}
		return cd
	}
	dumps := []*coredogv1.CoreDump{mk("d1", 0, false), mk("d2", 1, true), mk("d3", 2, true)}
	peers := func(context.Context, *coredogv1.CoreDump) ([]coredogv1.CoreDump, error) {
		out := make([]coredogv1.CoreDump, 0, len(dumps))
		for _, d := range dumps {
			out = append(out, *d)
		}
		return out, nil
	}
	e := newEnv(t, Options{}, peers, p, sinkSecret("hook", c.srv.URL), dumps[0], dumps[1], dumps[2])
	e.start()
	e.clock.Set(t0.Add(5 * time.Second))

	d3 := e.dump("d3")
	if wait, err := e.n.QueuePending(context.Background(), d3, p); wait != 0 || err != nil {
		t.Fatalf("d3: %v %v", wait, err)
	}
	if d3.Annotations[coredogv1.AnnotationNotifySummarizedBy] != "d2" {
		t.Errorf("d3 is not summarized by d2: %v", d3.Annotations)
	}
	wait, err := e.n.QueuePending(context.Background(), e.dump("d2"), p)
	if err != nil || wait != 7*time.Second {
		t.Errorf("d2 waits %v (%v), want until its window closes (6s) and a second", wait, err)
	}
	if len(c.requests()) != 0 {
		t.Fatal("sent before the window closed")
	}
	e.clock.Set(t0.Add(11 * time.Second))
	if wait, err := e.n.QueuePending(context.Background(), e.dump("d2"), p); wait != 0 || err != nil {
		t.Fatalf("d2 at the window's end: %v %v", wait, err)
	}
	eventually(t, "the window's notification", func() bool { return e.dump("d2").Annotations[coredogv1.AnnotationNotified] == "hook" })
	reqs := c.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	var ev struct {
		Type string `json:"type"`
		ID   string `json:"id"`
		Data Data   `json:"data"`
	}
	if err := json.Unmarshal(reqs[0].body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Type != TypeThrottled || ev.ID != "uid-d2" || ev.Data.Throttled == nil || ev.Data.Throttled.Count != 2 ||
		ev.Data.Throttled.RateLimit.Count != 1 || ev.Data.DownloadURL != "" {
		t.Errorf("event %s", reqs[0].body)
	}
}
