package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/klauspost/compress/zstd"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/notify"
	"github.com/coredog/coredog/internal/storage"
)

// webhookSink is an HTTP server standing in for a notification sink: it
// keeps every POST's decoded body and answers with status.
type webhookSink struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []notify.Data
	status int
}

func newWebhookSink(t *testing.T, status int) *webhookSink {
	w := &webhookSink{status: status}
	w.srv = httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		var d notify.Data
		if err := json.NewDecoder(r.Body).Decode(&d); err != nil || r.Method != http.MethodPost {
			http.Error(rw, "bad request", http.StatusBadRequest)
			return
		}
		w.mu.Lock()
		w.bodies = append(w.bodies, d)
		w.mu.Unlock()
		rw.WriteHeader(w.status)
	}))
	t.Cleanup(w.srv.Close)
	return w
}

func (w *webhookSink) received() []notify.Data {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]notify.Data(nil), w.bodies...)
}

// sinkSecret creates the Secret that holds a sink's URL.
func sinkSecret(t *testing.T, name, url string) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNamespace}, StringData: map[string]string{"url": url}}
	if err := k8s.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), s) })
}

// TestUploadNotifiesWebhookWithSignedLink: a dump stored in S3 is
// announced once, with a pre-signed link that downloads the stored object
// without credentials.
func TestUploadNotifiesWebhookWithSignedLink(t *testing.T) {
	g := NewWithT(t)
	backend := s3mem.New()
	s3srv := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(s3srv.Close)
	g.Expect(backend.CreateBucket("notified")).To(Succeed())
	creds := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s3-notify", Namespace: testNamespace},
		StringData: map[string]string{storage.KeyAWSAccessKeyID: "test-key", storage.KeyAWSSecretAccessKey: "test-secret"}}
	g.Expect(k8s.Create(context.Background(), creds)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), creds) })
	sink := newWebhookSink(t, http.StatusAccepted)
	sinkSecret(t, "notify-hook", sink.srv.URL+"/hooks/incoming")

	storeURL := "s3://notified/dumps?region=us-east-1&use_path_style=true&endpoint=" + s3srv.URL
	e := newDumpEnv(t, "notify", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Storage.URL = storeURL
		p.Spec.Storage.SecretRef = &coredogv1.SecretReference{Name: creds.Name}
		p.Spec.Notifications = []coredogv1.NotificationSink{{
			Name: "hook", Type: coredogv1.NotificationWebhook, SecretRef: coredogv1.SinkSecretRef{Name: "notify-hook"},
			LinkExpiry: &metav1.Duration{Duration: time.Hour},
		}}
	})
	createPod(t, "shop-notify", "api-0", e.node)
	data := coreLike(256 << 10)
	name := e.crashFile("api-0", "api", data)
	cd := e.waitPhase(g, name, coredogv1.PhaseUploaded)

	var got notify.Data
	g.Eventually(func(g Gomega) {
		bodies := sink.received()
		g.Expect(bodies).To(HaveLen(1))
		got = bodies[0]
	}, 30*time.Second, interval).Should(Succeed())
	g.Expect(got.Type).To(Equal(notify.TypeUploaded))
	g.Expect(got.Event).To(Equal(notify.EventUploaded))
	g.Expect(got.Policy).To(Equal(e.policy.Name))
	g.Expect(got.CoreDump.Name).To(Equal(cd.Name))
	g.Expect(got.CoreDump.UID).To(Equal(string(cd.UID)))
	g.Expect(got.Namespace).To(Equal("shop-notify"))
	g.Expect(got.Pod).To(Equal("api-0"))
	g.Expect(got.Container).To(Equal("app"))
	g.Expect(got.Workload).To(Equal("Pod/api-0"))
	g.Expect(got.Executable).To(Equal(cd.Spec.Process.Executable))
	g.Expect(got.Signal).To(Equal("SIGSEGV"))
	g.Expect(got.Node).To(Equal(e.node))
	g.Expect(got.Signature).To(Equal(cd.Spec.Signature))
	g.Expect(got.Occurrences).To(BeNumerically(">=", 1))
	g.Expect(got.Location).To(Equal(cd.Status.Storage.URL))
	g.Expect(got.DownloadURLExpiresAt).NotTo(BeNil())
	g.Expect(*got.DownloadURLExpiresAt).To(BeTemporally("~", time.Now().Add(time.Hour), 2*time.Minute))
	link, err := url.Parse(got.DownloadURL)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(link.Query().Get("X-Amz-Signature")).NotTo(BeEmpty())
	g.Expect(link.Query().Get("X-Amz-Expires")).To(Equal("3600"))

	// The link downloads the stored object, with no credentials.
	resp, err := http.Get(got.DownloadURL)
	g.Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusOK))
	fetched, err := io.ReadAll(resp.Body)
	g.Expect(err).NotTo(HaveOccurred())
	obj, err := backend.GetObject("notified", cd.Status.Storage.Key, nil)
	g.Expect(err).NotTo(HaveOccurred())
	stored, err := io.ReadAll(obj.Contents)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(fetched).To(Equal(stored))
	dec, err := zstd.NewReader(bytes.NewReader(fetched))
	g.Expect(err).NotTo(HaveOccurred())
	defer dec.Close()
	raw, err := io.ReadAll(dec)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(raw).To(Equal(data))

	// The delivery is recorded, so a re-reconcile or a restart does not repeat it.
	g.Eventually(func(g Gomega) {
		g.Expect(e.dump(g, name).Annotations).To(HaveKeyWithValue(coredogv1.AnnotationNotified, "hook"))
	}, timeout, interval).Should(Succeed())
	g.Expect(e.dump(g, name).Annotations).To(HaveKeyWithValue(coredogv1.AnnotationNotify, "hook"))
	g.Consistently(func() int { return len(sink.received()) }, 3*time.Second, 200*time.Millisecond).Should(Equal(1))
	g.Eventually(func(g Gomega) {
		c := condition(getPolicy(g, e.policy.Name), coredogv1.ConditionNotificationsReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionTrue), "condition: %+v", c)
		g.Expect(c.Reason).To(Equal(coredogv1.ReasonSinksReady))
	}, timeout, interval).Should(Succeed())
}

// TestFailingSinkShowsInPolicyAndUploadsGoOn: a sink that answers 500 for
// good never holds up the upload, and the policy says which sink fails and
// why, without its URL.
func TestFailingSinkShowsInPolicyAndUploadsGoOn(t *testing.T) {
	g := NewWithT(t)
	const token = "T0KEN-in-the-path-0123456789"
	sink := newWebhookSink(t, http.StatusInternalServerError)
	sinkSecret(t, "broken-hook", sink.srv.URL+"/services/"+token)
	e := newDumpEnv(t, "notify-broken", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Notifications = []coredogv1.NotificationSink{{
			Name: "broken", Type: coredogv1.NotificationSlack, SecretRef: coredogv1.SinkSecretRef{Name: "broken-hook"},
		}}
	})
	name := e.crashFile("worker-0", "worker", coreLike(32<<10))
	e.waitPhase(g, name, coredogv1.PhaseUploaded)

	g.Eventually(func(g Gomega) {
		c := condition(getPolicy(g, e.policy.Name), coredogv1.ConditionNotificationsReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse), "condition: %+v", c)
		g.Expect(c.Reason).To(Equal(coredogv1.ReasonSinkFailing))
		g.Expect(c.Message).To(ContainSubstring("sink broken:"))
		g.Expect(c.Message).To(ContainSubstring("500 Internal Server Error"))
		g.Expect(c.Message).NotTo(ContainSubstring(token))
		g.Expect(c.Message).NotTo(ContainSubstring(sink.srv.URL))
	}, 45*time.Second, interval).Should(Succeed())
	g.Expect(len(sink.received())).To(BeNumerically(">=", 3), "the sink was retried")
	// The upload was not held up, and the policy's storage is fine.
	g.Expect(e.dump(g, name).Status.Phase).To(Equal(coredogv1.PhaseUploaded))
	g.Expect(condition(getPolicy(g, e.policy.Name), coredogv1.ConditionStorageValid).Status).To(Equal(metav1.ConditionTrue))
}

// TestThrottledDumpsNotifyOncePerWindow: with a rate limit of one dump per
// window, three crashes make one notification for the stored dump and one
// for the two throttled ones, with their count.
func TestThrottledDumpsNotifyOncePerWindow(t *testing.T) {
	g := NewWithT(t)
	sink := newWebhookSink(t, http.StatusOK)
	sinkSecret(t, "throttle-hook", sink.srv.URL)
	const window = 15 * time.Second
	e := newDumpEnv(t, "notify-throttle", func(p *coredogv1.CoreDumpPolicy) {
		p.Spec.Limits.RateLimit = coredogv1.RateLimitSpec{Count: ptr.To[int32](1), Window: &metav1.Duration{Duration: window}}
		p.Spec.Notifications = []coredogv1.NotificationSink{{
			Name: "hook", Type: coredogv1.NotificationWebhook, SecretRef: coredogv1.SinkSecretRef{Name: "throttle-hook"},
			On: []coredogv1.NotificationTrigger{coredogv1.NotifyOnUploaded, coredogv1.NotifyOnSkipped, coredogv1.NotifyOnFailed},
		}}
	})
	createPod(t, "shop-throttle", "loop-0", e.node)
	// The first crash is stored; the next two, within the window, are throttled.
	first := e.crashFile("loop-0", "loop", coreLike(20<<10))
	stored := e.waitPhase(g, first, coredogv1.PhaseUploaded)
	// The rate limit orders dumps created in the same second by name, so
	// the next ones must come a second later to be ordered after it.
	time.Sleep(time.Until(stored.CreationTimestamp.Add(1100 * time.Millisecond)))
	names := []string{
		first,
		e.crashFile("loop-0", "loop", coreLike(21<<10)),
		e.crashFile("loop-0", "loop", coreLike(22<<10)),
	}
	var throttled []*coredogv1.CoreDump
	g.Eventually(func(g Gomega) {
		throttled = nil
		uploaded := 0
		var seen []string
		for _, n := range names {
			cd := e.dump(g, n)
			seen = append(seen, fmt.Sprintf("%s %s %s %s: %s", cd.Name, cd.CreationTimestamp.Format(time.RFC3339), cd.Status.Phase, cd.Status.Reason, cd.Status.Message))
			switch {
			case cd.Status.Phase == coredogv1.PhaseUploaded:
				uploaded++
			case cd.Status.Reason == coredogv1.ReasonThrottled:
				throttled = append(throttled, cd)
			}
		}
		g.Expect(uploaded).To(Equal(1), "dumps: %q", seen)
		g.Expect(throttled).To(HaveLen(2), "dumps: %q", seen)
	}, 60*time.Second, 200*time.Millisecond).Should(Succeed())

	g.Eventually(func(g Gomega) {
		g.Expect(sink.received()).To(HaveLen(2))
	}, window+30*time.Second, interval).Should(Succeed())
	g.Consistently(func() int { return len(sink.received()) }, 3*time.Second, 200*time.Millisecond).Should(Equal(2))
	var up, th *notify.Data
	for _, d := range sink.received() {
		switch d.Event {
		case notify.EventUploaded:
			up = &d
		case notify.EventThrottled:
			th = &d
		}
	}
	g.Expect(up).NotTo(BeNil())
	g.Expect(th).NotTo(BeNil(), "no throttled notification: %+v", sink.received())
	g.Expect(th.Type).To(Equal(notify.TypeThrottled))
	g.Expect(th.Throttled).NotTo(BeNil())
	g.Expect(th.Throttled.Count).To(Equal(2))
	g.Expect(th.Throttled.RateLimit.Count).To(Equal(int32(1)))
	g.Expect(th.Occurrences).To(Equal(3))
	g.Expect(th.Pod).To(Equal("loop-0"))
	g.Expect(strings.HasPrefix(up.DownloadURL, "file://")).To(BeTrue(), "file:// storage gets its location: %s", up.DownloadURL)
	g.Expect(up.DownloadURLExpiresAt).To(BeNil())

	// One throttled dump carries the notification; the other says so.
	leader, other := throttled[0], throttled[1]
	if th.CoreDump.Name != leader.Name {
		leader, other = other, leader
	}
	g.Expect(th.CoreDump.Name).To(Equal(leader.Name))
	g.Eventually(func(g Gomega) {
		var cur coredogv1.CoreDump
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(other), &cur)).To(Succeed())
		g.Expect(cur.Annotations).To(HaveKeyWithValue(coredogv1.AnnotationNotifySummarizedBy, leader.Name))
	}, timeout, interval).Should(Succeed())
}

// TestAPIRejectsInvalidNotifications: the schema says what to fix.
func TestAPIRejectsInvalidNotifications(t *testing.T) {
	sink := func(mutate func(*coredogv1.NotificationSink)) []coredogv1.NotificationSink {
		s := coredogv1.NotificationSink{Name: "s", Type: coredogv1.NotificationSlack, SecretRef: coredogv1.SinkSecretRef{Name: "x"}}
		mutate(&s)
		return []coredogv1.NotificationSink{s}
	}
	many := make([]coredogv1.NotificationSink, 17)
	for i := range many {
		many[i] = coredogv1.NotificationSink{Name: "s" + strings.Repeat("x", i), Type: coredogv1.NotificationSlack, SecretRef: coredogv1.SinkSecretRef{Name: "x"}}
	}
	cases := []struct {
		name  string
		sinks []coredogv1.NotificationSink
		want  string
	}{
		{"signing secret on Slack", sink(func(s *coredogv1.NotificationSink) {
			s.SigningSecretRef = &coredogv1.SigningSecretRef{Name: "sig"}
		}), "signingSecretRef applies to DingTalk and Lark sinks only"},
		{"link expiry beyond 7 days", sink(func(s *coredogv1.NotificationSink) {
			s.LinkExpiry = &metav1.Duration{Duration: 169 * time.Hour}
		}), "linkExpiry must be positive and at most 168h"},
		{"zero link expiry", sink(func(s *coredogv1.NotificationSink) { s.LinkExpiry = &metav1.Duration{} }), "linkExpiry must be positive"},
		{"name not a DNS label", sink(func(s *coredogv1.NotificationSink) { s.Name = "Team_Chat" }), "spec.notifications[0].name"},
		{"unknown type", sink(func(s *coredogv1.NotificationSink) { s.Type = "Pager" }), `supported values: "Webhook", "CloudEvents", "Slack", "Teams", "WeCom", "DingTalk", "Lark"`},
		{"unknown trigger", sink(func(s *coredogv1.NotificationSink) { s.On = []coredogv1.NotificationTrigger{"Pending"} }), `supported values: "Uploaded", "Skipped", "Failed"`},
		{"bad signal name", sink(func(s *coredogv1.NotificationSink) { s.Signals = []coredogv1.SignalName{"segv"} }), "spec.notifications[0].signals[0]"},
		{"duplicate names", append(sink(func(*coredogv1.NotificationSink) {}), sink(func(*coredogv1.NotificationSink) {})...), "Duplicate value"},
		{"too many sinks", many, "must have at most 16 items"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := validPolicy("notify-api-" + string(rune('a'+i)))
			p.Spec.Notifications = tc.sinks
			err := k8s.Create(context.Background(), p)
			if err == nil {
				_ = k8s.Delete(context.Background(), p)
				t.Fatalf("the API server accepted %s", tc.name)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant an Invalid error containing %q", err, tc.want)
			}
		})
	}

	// A valid sink gets its defaults from the schema.
	g := NewWithT(t)
	p := validPolicy("notify-api-defaults")
	p.Spec.Notifications = sink(func(s *coredogv1.NotificationSink) {
		s.Type = coredogv1.NotificationDingTalk
		s.SigningSecretRef = &coredogv1.SigningSecretRef{Name: "sig"}
	})
	g.Expect(k8s.Create(context.Background(), p)).To(Succeed())
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), p) })
	got := getPolicy(g, p.Name).Spec.Notifications[0]
	g.Expect(got.SecretRef.Key).To(Equal("url"))
	g.Expect(got.SigningSecretRef.Key).To(Equal("secret"))
	g.Expect(got.On).To(Equal([]coredogv1.NotificationTrigger{coredogv1.NotifyOnUploaded, coredogv1.NotifyOnFailed}))
	g.Expect(got.LinkExpiry.Duration).To(Equal(time.Hour))
	// Its Secret does not exist: the policy says so, naming the sink and the Secret.
	g.Eventually(func(g Gomega) {
		c := condition(getPolicy(g, p.Name), coredogv1.ConditionNotificationsReady)
		g.Expect(c.Status).To(Equal(metav1.ConditionFalse))
		g.Expect(c.Reason).To(Equal(coredogv1.ReasonSinkSecretInvalid))
		g.Expect(c.Message).To(ContainSubstring("sink s: Secret " + testNamespace + "/x does not exist"))
	}, timeout, interval).Should(Succeed())
}
