package notify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/source"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/throttle"
)

// LinkFunc returns a download link for a stored dump, valid for expiry, and
// when it expires; a zero time means the link does not expire (a location
// rather than a signed URL).
type LinkFunc func(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy, expiry time.Duration) (string, time.Time, error)

// PeersFunc lists the CoreDumps that share cd's rate-limit budget (policy,
// workload and signature), cd included.
type PeersFunc func(ctx context.Context, cd *coredogv1.CoreDump) ([]coredogv1.CoreDump, error)

// Options tune delivery; zero values take the defaults.
type Options struct {
	// Workers send in parallel. Default 2.
	Workers int
	// QueueSize bounds the notifications waiting to be sent. Default 1000.
	QueueSize int
	// Attempts per notification before giving up. Default 8.
	Attempts int
	// BackoffBase is the wait after the first failed attempt; it doubles up
	// to BackoffCap. Defaults 1s and 1m (8 attempts span about two minutes).
	BackoffBase, BackoffCap time.Duration
	// Timeout bounds one attempt. Default 10s.
	Timeout time.Duration
	// FailingAfter consecutive failures mark a sink failing in its policy's
	// NotificationsReady condition. Default 3.
	FailingAfter int
	// HTTPClient posts; nil means NewHTTPClient(Timeout).
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Defaults of Options.
const (
	DefaultWorkers      = 2
	DefaultQueueSize    = 1000
	DefaultAttempts     = 8
	DefaultBackoffBase  = time.Second
	DefaultBackoffCap   = time.Minute
	DefaultFailingAfter = 3
	// queueFullRetry is when a dump whose notification did not fit in the
	// queue is looked at again.
	queueFullRetry = 30 * time.Second
	// undecidedRetry is when a throttled dump that waits for an earlier
	// dump's verdict is looked at again.
	undecidedRetry = 2 * time.Second
)

// Config is what a Notifier works with.
type Config struct {
	// Client reads Secrets, Namespaces, policies and CoreDumps (cached) and
	// patches CoreDump annotations.
	Client client.Client
	// APIReader reads CoreDumps uncached before sending, so that a stale
	// cache never sends twice.
	APIReader client.Reader
	// Namespace is the controller's namespace, where sink Secrets live.
	Namespace string
	// Cluster names the cluster in messages; may be empty.
	Cluster string
	// Link makes download links; nil sends the stored location.
	Link LinkFunc
	// Peers lists the dumps of a rate-limit budget; nil notifies throttled
	// dumps each on its own.
	Peers PeersFunc
	Options
}

// Notifier decides, queues and sends notifications. It is a manager
// Runnable that runs on the leader only, like the reconcilers that feed it.
type Notifier struct {
	cfg    Config
	opts   Options
	sender *Sender
	log    logr.Logger
	queue  workqueue.TypedRateLimitingInterface[jobKey]

	mu      sync.Mutex
	jobs    map[jobKey]*job
	health  map[sinkKey]*sinkHealth
	changes chan event.GenericEvent
}

type jobKey struct {
	UID  types.UID
	Sink string
}

type sinkKey struct{ policy, sink string }

type job struct {
	policy string
	dump   types.NamespacedName
	msg    Message
}

// sinkHealth is how a sink fared lately; it lives in memory, on the leader.
type sinkHealth struct {
	consecutive int
	lastError   string
	lastFailure time.Time
	lastSuccess time.Time
	lastGiveUp  time.Time
	// fingerprint of the sink's configuration at the last failure: a
	// changed configuration deserves a fresh start.
	fingerprint string
}

var (
	_ manager.Runnable               = (*Notifier)(nil)
	_ manager.LeaderElectionRunnable = (*Notifier)(nil)
)

// New makes a Notifier; add it to the manager to start its workers.
func New(cfg Config) *Notifier {
	o := cfg.Options
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = DefaultBackoffBase
	}
	if o.BackoffCap < o.BackoffBase {
		o.BackoffCap = max(DefaultBackoffCap, o.BackoffBase)
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.FailingAfter <= 0 {
		o.FailingAfter = DefaultFailingAfter
	}
	if o.HTTPClient == nil {
		o.HTTPClient = NewHTTPClient(o.Timeout)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Notifier{
		cfg: cfg, opts: o,
		sender: &Sender{Client: o.HTTPClient, Now: o.Now},
		log:    ctrl.Log.WithName("notifier"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[jobKey](o.BackoffBase, o.BackoffCap),
			workqueue.TypedRateLimitingQueueConfig[jobKey]{Name: "coredog-notifications"}),
		jobs:    map[jobKey]*job{},
		health:  map[sinkKey]*sinkHealth{},
		changes: make(chan event.GenericEvent, 256),
	}
}

// NeedLeaderElection: only the leader sends.
func (n *Notifier) NeedLeaderElection() bool { return true }

// Start runs the workers until ctx ends.
func (n *Notifier) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for range n.opts.Workers {
		wg.Go(func() {
			for n.processNext(ctx) {
			}
		})
	}
	<-ctx.Done()
	n.queue.ShutDown()
	wg.Wait()
	return nil
}

// Source is a watch source for the policy controller: it names a policy
// whenever one of its sinks starts or stops failing.
func (n *Notifier) Source() source.Source {
	return source.Channel(n.changes, &handler.EnqueueRequestForObject{})
}

// MarkDue records, on a CoreDump that just reached its final phase, which
// of its policy's sinks it is due at (annotation coredog.io/notify). The
// caller writes the annotation with the final phase. Sinks added to a
// policy later do not notify earlier dumps.
func (n *Notifier) MarkDue(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) {
	if p == nil || len(p.Spec.Notifications) == 0 {
		return
	}
	if _, ok := TriggerOf(cd); !ok {
		return
	}
	nsLabels := n.namespaceLabels(ctx, cd)
	var due []string
	for i := range p.Spec.Notifications {
		s := &p.Spec.Notifications[i]
		ok, err := Matches(s, cd, nsLabels)
		if err != nil {
			ctrl.LoggerFrom(ctx).Info("Notification sink does not apply", "sink", s.Name, "err", err.Error())
		}
		if ok {
			due = append(due, s.Name)
		}
	}
	if len(due) == 0 {
		return
	}
	if cd.Annotations == nil {
		cd.Annotations = map[string]string{}
	}
	cd.Annotations[coredogv1.AnnotationNotify] = joinList(due)
}

// QueuePending queues the notifications a CoreDump in its final phase still
// owes. It never blocks and never sends; it returns when the dump should
// be looked at again (0: not for notifications). It may set the
// coredog.io/notify-summarized-by annotation on a throttled dump, which the
// caller writes.
func (n *Notifier) QueuePending(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (time.Duration, error) {
	pending := n.pendingSinks(cd, p)
	if len(pending) == 0 {
		return 0, nil
	}
	msg, wait, err := n.message(ctx, cd, p)
	if err != nil || msg == nil {
		return wait, err
	}
	full := false
	for _, s := range pending {
		if !n.enqueue(jobKey{UID: cd.UID, Sink: s}, &job{policy: p.Name, dump: client.ObjectKeyFromObject(cd), msg: *msg}) {
			full = true
		}
	}
	if full {
		ctrl.LoggerFrom(ctx).Info("Notification queue is full; trying again later", "retryIn", queueFullRetry.String())
		return queueFullRetry, nil
	}
	return 0, nil
}

// pendingSinks are the sinks cd is due at that have not been told, and
// still exist in the policy.
func (n *Notifier) pendingSinks(cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) []string {
	a := cd.Annotations
	if p == nil || a[coredogv1.AnnotationNotify] == "" || a[coredogv1.AnnotationNotifySummarizedBy] != "" {
		return nil
	}
	done := append(splitList(a[coredogv1.AnnotationNotified]), splitList(a[coredogv1.AnnotationNotifyFailed])...)
	var pending []string
	for _, s := range splitList(a[coredogv1.AnnotationNotify]) {
		if !slices.Contains(done, s) && sinkSpec(p, s) != nil {
			pending = append(pending, s)
		}
	}
	return pending
}

// message builds what cd's notification says. A throttled dump speaks for
// its rate-limit window when it opened it and the window has closed; other
// throttled dumps are marked as summarized and say nothing.
func (n *Notifier) message(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*Message, time.Duration, error) {
	m := baseMessage(cd, p, n.cfg.Cluster)
	occ, err := n.occurrences(ctx, cd)
	if err != nil {
		return nil, 0, err
	}
	m.Occurrences = occ
	if cd.Status.Reason != coredogv1.ReasonThrottled || n.cfg.Peers == nil {
		return m, 0, nil
	}
	list, err := n.cfg.Peers(ctx, cd)
	if err != nil {
		return nil, 0, fmt.Errorf("listing dumps of the same rate-limit budget: %w", err)
	}
	budget := make([]throttle.Dump, 0, len(list))
	for i := range list {
		budget = append(budget, throttle.Of(&list[i]))
	}
	limit, window := throttle.Limit(p)
	w, ready := throttle.WindowOf(throttle.Of(cd), budget, window)
	if !ready {
		return nil, undecidedRetry, nil
	}
	if w.Leader.Name != cd.Name {
		if cd.Annotations == nil {
			cd.Annotations = map[string]string{}
		}
		cd.Annotations[coredogv1.AnnotationNotifySummarizedBy] = w.Leader.Name
		return nil, 0, nil
	}
	if wait := w.Until.Sub(n.opts.Now()); wait > 0 {
		return nil, wait + time.Second, nil
	}
	if throttle.Undecided(budget, w.Until) {
		return nil, undecidedRetry, nil
	}
	m.Event = EventThrottled
	m.Throttled = &ThrottleSummary{Count: w.Count, Since: w.Leader.Created, Until: w.Until, Limit: limit, Window: window}
	return m, 0, nil
}

func baseMessage(cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy, cluster string) *Message {
	proc := cd.Spec.Process
	m := &Message{
		Cluster: cluster, Policy: p.Name,
		CoreDump: cd.Name, CoreDumpNamespace: cd.Namespace, UID: string(cd.UID),
		Node: cd.Spec.NodeName, Executable: proc.Executable, Signal: proc.SignalName, SignalNumber: proc.Signal,
		Signature: cd.Spec.Signature, CrashedAt: cd.Spec.DetectedAt.Time, Size: cd.Spec.Size,
		Reason: cd.Status.Reason, Detail: cd.Status.Message,
	}
	if proc.DumpedAt != nil {
		m.CrashedAt = proc.DumpedAt.Time
	}
	if a := cd.Status.Analysis; a != nil {
		m.Frames = append([]coredogv1.StackFrame(nil), a.Frames[:min(len(a.Frames), TopFrames)]...)
	}
	switch cd.Status.Phase {
	case coredogv1.PhaseSkipped:
		m.Event = EventSkipped
	case coredogv1.PhaseFailed:
		m.Event = EventFailed
	default:
		m.Event = EventUploaded
		if st := cd.Status.Storage; st != nil {
			m.Location = st.URL
		}
	}
	if ref := cd.Status.Pod; ref != nil && ref.Name != "" {
		m.Namespace, m.Pod, m.Container, m.Image = ref.Namespace, ref.Name, ref.Container, ref.Image
		if ref.WorkloadKind != "" {
			m.Workload = ref.WorkloadKind + "/" + ref.WorkloadName
		}
	}
	return m
}

// occurrences counts the CoreDumps that share cd's signature.
func (n *Notifier) occurrences(ctx context.Context, cd *coredogv1.CoreDump) (int, error) {
	if cd.Spec.Signature == "" {
		return 0, nil
	}
	var dumps coredogv1.CoreDumpList
	if err := n.cfg.Client.List(ctx, &dumps, client.InNamespace(cd.Namespace),
		client.MatchingLabels{coredogv1.LabelSignature: coredogv1.LabelValue(cd.Spec.Signature)}); err != nil {
		return 0, fmt.Errorf("counting dumps with signature %s: %w", cd.Spec.Signature, err)
	}
	c := 0
	for i := range dumps.Items {
		if dumps.Items[i].Spec.Signature == cd.Spec.Signature {
			c++
		}
	}
	return max(c, 1), nil
}

func (n *Notifier) namespaceLabels(ctx context.Context, cd *coredogv1.CoreDump) map[string]string {
	ref := cd.Status.Pod
	if ref == nil || ref.Namespace == "" {
		return nil
	}
	var ns corev1.Namespace
	if err := n.cfg.Client.Get(ctx, client.ObjectKey{Name: ref.Namespace}, &ns); err != nil {
		return nil
	}
	if ns.Labels == nil {
		return map[string]string{}
	}
	return ns.Labels
}

// enqueue adds a job unless it is already queued; false when the queue is full.
func (n *Notifier) enqueue(k jobKey, j *job) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.jobs[k]; ok {
		return true
	}
	if len(n.jobs) >= n.opts.QueueSize {
		return false
	}
	n.jobs[k] = j
	n.queue.Add(k)
	return true
}

func (n *Notifier) processNext(ctx context.Context) bool {
	k, shutdown := n.queue.Get()
	if shutdown {
		return false
	}
	defer n.queue.Done(k)
	n.process(ctx, k)
	return true
}

// process makes one delivery attempt and decides what comes next: done,
// retry after backoff, or give up.
func (n *Notifier) process(ctx context.Context, k jobKey) {
	n.mu.Lock()
	j := n.jobs[k]
	n.mu.Unlock()
	if j == nil {
		n.queue.Forget(k)
		return
	}
	log := n.log.WithValues("coredump", klog.KRef(j.dump.Namespace, j.dump.Name), "policy", j.policy, "sink", k.Sink)
	done := func() {
		n.queue.Forget(k)
		n.mu.Lock()
		delete(n.jobs, k)
		n.mu.Unlock()
	}
	attempt := n.queue.NumRequeues(k) + 1
	retryLater := func() {
		if attempt >= n.opts.Attempts {
			done()
			return
		}
		n.queue.AddRateLimited(k)
	}

	// The API server, not the cache, says whether this was sent already.
	var cd coredogv1.CoreDump
	if err := n.cfg.APIReader.Get(ctx, j.dump, &cd); err != nil {
		if apierrors.IsNotFound(err) {
			done()
		} else if ctx.Err() == nil {
			log.Info("Reading the CoreDump before notifying failed; retrying", "err", err.Error())
			retryLater()
		}
		return
	}
	if cd.UID != k.UID || slices.Contains(splitList(cd.Annotations[coredogv1.AnnotationNotified]), k.Sink) ||
		slices.Contains(splitList(cd.Annotations[coredogv1.AnnotationNotifyFailed]), k.Sink) {
		done()
		return
	}
	var p coredogv1.CoreDumpPolicy
	if err := n.cfg.Client.Get(ctx, client.ObjectKey{Name: j.policy}, &p); err != nil {
		if apierrors.IsNotFound(err) {
			done()
		} else {
			retryLater()
		}
		return
	}
	spec := sinkSpec(&p, k.Sink)
	if spec == nil {
		done() // The sink was removed from the policy.
		return
	}
	sk := sinkKey{p.Name, spec.Name}
	sink, fp, err := n.resolve(ctx, spec)
	if err == nil {
		msg := j.msg
		n.addLink(ctx, &cd, &p, spec, &msg)
		err = n.sender.Send(ctx, sink, &msg)
	}
	if ctx.Err() != nil {
		return // Shutting down: the next leader sends it.
	}
	if err == nil {
		n.succeeded(sk)
		if rerr := n.record(ctx, j.dump, k.UID, coredogv1.AnnotationNotified, k.Sink); rerr != nil {
			log.Info("Notification sent, but recording it failed; it may be sent again", "err", rerr.Error())
		}
		notifications.WithLabelValues(string(spec.Type), "delivered").Inc()
		log.V(1).Info("Notification sent")
		done()
		return
	}
	giveUp := !Retryable(err) || attempt >= n.opts.Attempts
	n.failed(sk, fp, err, giveUp)
	if !giveUp {
		notifications.WithLabelValues(string(spec.Type), "retried").Inc()
		log.V(1).Info("Notification failed; retrying", "attempt", attempt, "err", err.Error())
		n.queue.AddRateLimited(k)
		return
	}
	notifications.WithLabelValues(string(spec.Type), "failed").Inc()
	log.Info("Giving up on a notification", "attempts", attempt, "err", err.Error())
	if rerr := n.record(ctx, j.dump, k.UID, coredogv1.AnnotationNotifyFailed, k.Sink); rerr != nil {
		log.Info("Recording the failed notification failed", "err", rerr.Error())
	}
	done()
}

// addLink puts the download link into a message: a signed URL for stored
// dumps in stores that sign, the location otherwise.
func (n *Notifier) addLink(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy, spec *coredogv1.NotificationSink, m *Message) {
	if m.Location == "" || m.Event != EventUploaded {
		return
	}
	m.Link = m.Location
	if n.cfg.Link == nil {
		return
	}
	expiry := coredogv1.DefaultLinkExpiry
	if spec.LinkExpiry != nil && spec.LinkExpiry.Duration > 0 {
		expiry = min(spec.LinkExpiry.Duration, coredogv1.MaxLinkExpiry)
	}
	link, expires, err := n.cfg.Link(ctx, cd, p, expiry)
	if err != nil {
		n.log.Info("No signed download link; sending the stored location", "coredump", klog.KObj(cd), "err", err.Error())
		return
	}
	m.Link, m.LinkExpires = link, expires
}

// record adds sink to a list annotation of the CoreDump, with optimistic
// locking so that workers telling different sinks do not lose each other's
// records.
func (n *Notifier) record(ctx context.Context, key types.NamespacedName, uid types.UID, annotation, sink string) error {
	return retry.RetryOnConflict(retry.DefaultBackoff, func() error {
		var cd coredogv1.CoreDump
		if err := n.cfg.APIReader.Get(ctx, key, &cd); err != nil {
			return client.IgnoreNotFound(err)
		}
		list := splitList(cd.Annotations[annotation])
		if cd.UID != uid || slices.Contains(list, sink) {
			return nil
		}
		orig := cd.DeepCopy()
		if cd.Annotations == nil {
			cd.Annotations = map[string]string{}
		}
		cd.Annotations[annotation] = joinList(append(list, sink))
		return client.IgnoreNotFound(n.cfg.Client.Patch(ctx, &cd, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})))
	})
}

func sinkSpec(p *coredogv1.CoreDumpPolicy, name string) *coredogv1.NotificationSink {
	for i := range p.Spec.Notifications {
		if p.Spec.Notifications[i].Name == name {
			return &p.Spec.Notifications[i]
		}
	}
	return nil
}

// resolve reads a sink's Secrets. It returns the sink and a fingerprint of
// its configuration (spec and Secret versions). Errors name Secrets and
// keys, never values.
func (n *Notifier) resolve(ctx context.Context, spec *coredogv1.NotificationSink) (Sink, string, error) {
	h := sha256.New()
	b, _ := json.Marshal(spec)
	h.Write(b)
	urlKey := spec.SecretRef.Key
	if urlKey == "" {
		urlKey = coredogv1.DefaultSinkURLKey
	}
	s := Sink{Name: spec.Name, Type: spec.Type}
	secret, err := n.secret(ctx, spec.SecretRef.Name)
	if err != nil {
		return s, "", err
	}
	h.Write([]byte(secret.ResourceVersion))
	s.URL = strings.TrimSpace(string(secret.Data[urlKey]))
	if s.URL == "" {
		//nolint:staticcheck // "Secret" is the kind\'s name, and users match on these messages
		return s, "", fmt.Errorf("Secret %s/%s has no key %s", n.cfg.Namespace, secret.Name, urlKey)
	}
	if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return s, "", fmt.Errorf("key %s of Secret %s/%s is not an absolute http(s) URL", urlKey, n.cfg.Namespace, secret.Name)
	}
	if spec.Type == coredogv1.NotificationWebhook || spec.Type == coredogv1.NotificationCloudEvents {
		s.Token = strings.TrimSpace(string(secret.Data[coredogv1.SinkTokenKey]))
	}
	if ref := spec.SigningSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = coredogv1.DefaultSigningSecretKey
		}
		ss, err := n.secret(ctx, ref.Name)
		if err != nil {
			return s, "", err
		}
		h.Write([]byte(ss.ResourceVersion))
		s.SigningSecret = strings.TrimSpace(string(ss.Data[key]))
		if s.SigningSecret == "" {
			//nolint:staticcheck // "Secret" is the kind\'s name, and users match on these messages
			return s, "", fmt.Errorf("Secret %s/%s has no key %s (signingSecretRef)", n.cfg.Namespace, ss.Name, key)
		}
	}
	return s, hex.EncodeToString(h.Sum(nil)), nil
}

func (n *Notifier) secret(ctx context.Context, name string) (*corev1.Secret, error) {
	var s corev1.Secret
	err := n.cfg.Client.Get(ctx, client.ObjectKey{Namespace: n.cfg.Namespace, Name: name}, &s)
	if apierrors.IsNotFound(err) {
		//nolint:staticcheck // "Secret" is the kind\'s name, and users match on these messages
		return nil, fmt.Errorf("Secret %s/%s does not exist", n.cfg.Namespace, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s/%s: %w", n.cfg.Namespace, name, err)
	}
	return &s, nil
}

func (n *Notifier) succeeded(k sinkKey) {
	n.mu.Lock()
	h := n.healthOf(k)
	wasFailing := h.failing(n.opts.FailingAfter)
	h.consecutive, h.lastSuccess = 0, n.opts.Now()
	n.mu.Unlock()
	if wasFailing {
		n.changed(k.policy)
	}
}

func (n *Notifier) failed(k sinkKey, fingerprint string, err error, gaveUp bool) {
	n.mu.Lock()
	h := n.healthOf(k)
	wasFailing := h.failing(n.opts.FailingAfter)
	now := n.opts.Now()
	h.consecutive++
	h.lastError, h.lastFailure, h.fingerprint = err.Error(), now, fingerprint
	if gaveUp {
		h.lastGiveUp = now
	}
	isFailing := h.failing(n.opts.FailingAfter)
	n.mu.Unlock()
	if isFailing != wasFailing || gaveUp {
		n.changed(k.policy)
	}
}

func (n *Notifier) healthOf(k sinkKey) *sinkHealth {
	h := n.health[k]
	if h == nil {
		h = &sinkHealth{}
		n.health[k] = h
	}
	return h
}

// failing: enough failures in a row, or a notification given up since the
// last success.
func (h *sinkHealth) failing(after int) bool {
	return h.consecutive >= after || (!h.lastGiveUp.IsZero() && h.lastGiveUp.After(h.lastSuccess))
}

// changed asks the policy controller to look at a policy again. It never
// blocks: a lost nudge only delays the condition until the next reconcile.
func (n *Notifier) changed(policy string) {
	select {
	case n.changes <- event.GenericEvent{Object: &coredogv1.CoreDumpPolicy{ObjectMeta: metav1.ObjectMeta{Name: policy}}}:
	default:
	}
}

// Condition says how a policy's sinks fare, for its NotificationsReady
// condition; ok is false when the policy has no sinks (no condition). The
// message names sinks, Secrets and keys, and errors already scrubbed of
// URLs and tokens.
func (n *Notifier) Condition(ctx context.Context, p *coredogv1.CoreDumpPolicy) (status metav1.ConditionStatus, reason, msg string, ok bool) {
	if len(p.Spec.Notifications) == 0 {
		return "", "", "", false
	}
	var invalid, failing []string
	for i := range p.Spec.Notifications {
		spec := &p.Spec.Notifications[i]
		_, fp, err := n.resolve(ctx, spec)
		if err != nil {
			invalid = append(invalid, fmt.Sprintf("sink %s: %v", spec.Name, err))
			continue
		}
		n.mu.Lock()
		h := n.health[sinkKey{p.Name, spec.Name}]
		if h != nil && h.fingerprint == fp && h.failing(n.opts.FailingAfter) {
			failing = append(failing, fmt.Sprintf("sink %s: %d %s failed in a row, the last at %s: %s", spec.Name,
				h.consecutive, plural(h.consecutive, "attempt", "attempts"), h.lastFailure.UTC().Format(time.RFC3339), h.lastError))
		}
		n.mu.Unlock()
	}
	switch {
	case len(invalid) > 0:
		return metav1.ConditionFalse, coredogv1.ReasonSinkSecretInvalid, strings.Join(append(invalid, failing...), "; "), true
	case len(failing) > 0:
		return metav1.ConditionFalse, coredogv1.ReasonSinkFailing, strings.Join(failing, "; ") + "; uploads go on", true
	}
	c := len(p.Spec.Notifications)
	return metav1.ConditionTrue, coredogv1.ReasonSinksReady, fmt.Sprintf("%d notification %s configured, none failing", c, plural(c, "sink", "sinks")), true
}

// SecretNames are the Secrets a policy's sinks read, so that a change to
// one re-evaluates the policy.
func SecretNames(p *coredogv1.CoreDumpPolicy) []string {
	var names []string
	for _, s := range p.Spec.Notifications {
		names = append(names, s.SecretRef.Name)
		if s.SigningSecretRef != nil {
			names = append(names, s.SigningSecretRef.Name)
		}
	}
	return names
}

var notifications = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "coredog_notifications_total",
	Help: "Notification delivery attempts by sink type and result (delivered, retried, failed).",
}, []string{"type", "result"})

// sinkTypes are every sink type; each type's "failed" series exists from
// the start, so that an alert on its increase sees the first failure.
var sinkTypes = []coredogv1.NotificationSinkType{
	coredogv1.NotificationWebhook, coredogv1.NotificationCloudEvents, coredogv1.NotificationSlack, coredogv1.NotificationTeams,
	coredogv1.NotificationWeCom, coredogv1.NotificationDingTalk, coredogv1.NotificationLark,
}

func init() {
	if err := metrics.Registry.Register(notifications); err != nil {
		if _, ok := errors.AsType[prometheus.AlreadyRegisteredError](err); !ok {
			panic(err)
		}
	}
	for _, t := range sinkTypes {
		notifications.WithLabelValues(string(t), "failed")
	}
}
