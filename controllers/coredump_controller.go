package controllers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/notify"
	"github.com/coredog/coredog/controllers/podresolve"
	"github.com/coredog/coredog/controllers/throttle"
	"github.com/coredog/coredog/controllers/upload"
	"github.com/coredog/coredog/internal/storage"
)

// Indexes on cached objects.
const (
	indexPodNode      = "spec.nodeName"
	indexDumpPolicy   = "spec.policyName"
	indexDumpSigKey   = "coredog.signatureKey"
	terminationWindow = 2 * time.Minute
	backoffBase       = time.Second
	backoffCap        = 5 * time.Minute
	cleanupGiveUp     = 10
	// startUploadDelay brings a dump that just went Uploading back for its
	// first attempt; the status patch's watch event usually comes first.
	startUploadDelay = 10 * time.Millisecond
	// warnAfterAttempts failed uploads in a row raise a Warning event: one
	// failed attempt is mostly a blip (an agent restarting), three span
	// several seconds of backoff.
	warnAfterAttempts = 3
)

// DumpUploader is what the CoreDump reconciler needs from storage:
// upload.Uploader, or a double in tests.
type DumpUploader interface {
	// Key decides where a dump will be stored.
	Key(cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, error)
	// Upload streams the dump into storage; it returns only after the
	// store confirmed the write. It also returns the agent's analysis of
	// the dump, checked and bounded, as status.analysis takes it (nil when
	// there is none).
	Upload(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, *coredogv1.CrashAnalysis, error)
	// DeleteStored removes the dump's stored objects, if they are its own.
	DeleteStored(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) error
}

var _ DumpUploader = (*upload.Uploader)(nil)

// errNotClaimed ends a reconcile whose claim of an upload attempt the API
// server did not confirm; nothing else of that reconcile is written.
var errNotClaimed = errors.New("the upload attempt was not claimed")

// staleRetry brings back a dump whose reconcile read an outdated copy from
// the cache; the watch event of the newer copy usually comes first.
const staleRetry = time.Second

// CoreDumpReconciler takes each CoreDump from Pending to Uploaded, or to
// Skipped or Failed with a reason: it resolves the owning pod, applies the
// policy's selectors and limits, streams the dump from its agent into
// storage, tells people, and deletes the stored objects after the policy's
// TTL or when the CoreDump is deleted. It does not manage agents.
type CoreDumpReconciler struct {
	client.Client
	// APIReader reads objects the manager does not cache (ReplicaSets, Jobs).
	APIReader client.Reader
	Scheme    *runtime.Scheme
	Recorder  events.EventRecorder
	Namespace string
	Uploader  DumpUploader
	// MaxAttempts is how many failed uploads make a dump Failed.
	MaxAttempts int32
	// MaxConcurrent bounds parallel reconciles, and so parallel uploads.
	MaxConcurrent int
	Clock         clock.PassiveClock
	Metrics       *Metrics
	// Notifier tells the policy's notification sinks about dumps in a final
	// phase; nil sends none.
	Notifier *notify.Notifier

	// mu guards cleanupFailures: reconciles of different CoreDumps run
	// concurrently.
	mu              sync.Mutex
	cleanupFailures map[string]int
	// ledger holds the dumps this manager let through until the cache
	// shows them so.
	ledger throttle.Ledger
}

// +kubebuilder:rbac:groups=coredog.io,namespace=coredog-system,resources=coredumps,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=coredog.io,namespace=coredog-system,resources=coredumps/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=coredog.io,namespace=coredog-system,resources=coredumps/finalizers,verbs=update
// +kubebuilder:rbac:groups="",resources=pods;namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=pods/log,verbs=get
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=get
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get

// Reconcile moves one CoreDump along: finalizer first, deletion, then the
// function of the dump's phase; status, labels and annotations are written
// once, at the end, when they changed.
func (r *CoreDumpReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	var cd coredogv1.CoreDump
	if err := r.Get(ctx, req.NamespacedName, &cd); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	policy, err := r.policy(ctx, cd.Spec.PolicyName)
	if err != nil {
		return ctrl.Result{}, err
	}
	if !cd.DeletionTimestamp.IsZero() {
		return r.reconcileDelete(ctx, &cd, policy)
	}
	if !controllerutil.ContainsFinalizer(&cd, coredogv1.FinalizerCleanup) {
		patch := client.MergeFrom(cd.DeepCopy())
		controllerutil.AddFinalizer(&cd, coredogv1.FinalizerCleanup)
		return ctrl.Result{}, client.IgnoreNotFound(r.Patch(ctx, &cd, patch))
	}

	orig := cd.DeepCopy()
	var claimed bool
	defer func() {
		if errors.Is(retErr, errNotClaimed) {
			// The claim failed: what this reconcile decided rests on a
			// copy that is not the API server's, or was not written.
			if apierrors.IsConflict(retErr) || apierrors.IsNotFound(retErr) {
				ctrl.LoggerFrom(ctx).V(1).Info("The cached CoreDump was outdated; no upload started", "err", retErr.Error())
				result, retErr = ctrl.Result{RequeueAfter: staleRetry}, nil
			}
			return
		}
		err := r.writeBack(ctx, orig, &cd, !claimed)
		if apierrors.IsConflict(err) {
			ctrl.LoggerFrom(ctx).V(1).Info("The cached CoreDump was outdated; nothing written", "err", err.Error())
			result = ctrl.Result{RequeueAfter: staleRetry}
			return
		}
		retErr = errors.Join(retErr, err)
	}()
	return r.reconcileNormal(ctx, orig, &cd, policy, &claimed)
}

// reconcileNormal deletes a dump whose retention has passed, and otherwise
// hands it to the function of its phase. Every phase but Uploading's backoff
// comes back at the latest when the retention ends.
func (r *CoreDumpReconciler) reconcileNormal(ctx context.Context, orig, cd *coredogv1.CoreDump, policy *coredogv1.CoreDumpPolicy, claimed *bool) (ctrl.Result, error) {
	untilExpiry, expired := r.untilExpiry(cd, policy)
	if expired {
		ctrl.LoggerFrom(ctx).Info("Deleting CoreDump: its retention has passed", "ttl", retentionOf(cd, policy).String(), "phase", cd.Status.Phase)
		return ctrl.Result{}, client.IgnoreNotFound(r.Delete(ctx, cd))
	}

	if cd.Status.Phase == "" {
		cd.Status.Phase = coredogv1.PhasePending
	}
	cd.Status.ObservedGeneration = cd.Generation
	r.setLabels(cd)
	if cd.Status.Phase.IsFinal() {
		return r.reconcileFinal(ctx, cd, policy, untilExpiry), nil
	}
	if policy == nil {
		cd.Status.Message = fmt.Sprintf("CoreDumpPolicy %s does not exist; the dump waits on node %s", cd.Spec.PolicyName, cd.Spec.NodeName)
		cd.Status.Reason = coredogv1.ReasonPolicyNotFound
		return ctrl.Result{RequeueAfter: time.Minute}, nil
	}
	if cd.Status.Pod == nil {
		if err := r.resolvePod(ctx, cd); err != nil {
			return ctrl.Result{}, err
		}
		r.setLabels(cd)
	}
	if cd.Status.Phase == coredogv1.PhasePending {
		return r.reconcilePending(ctx, cd, policy, untilExpiry)
	}
	return r.reconcileUploading(ctx, orig, cd, policy, untilExpiry, claimed)
}

// reconcilePending applies the policy's filters and limits: a dump they
// refuse is Skipped; one they keep gets its storage key and goes Uploading.
func (r *CoreDumpReconciler) reconcilePending(ctx context.Context, cd *coredogv1.CoreDump, policy *coredogv1.CoreDumpPolicy, untilExpiry ctrl.Result) (ctrl.Result, error) {
	reason, msg, err := r.decide(ctx, cd, policy)
	if err != nil {
		return ctrl.Result{}, err
	}
	if reason != "" {
		r.finish(ctx, cd, coredogv1.PhaseSkipped, reason, msg)
		if reason == coredogv1.ReasonThrottled {
			r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventThrottled, "Throttle", "%s", msg)
		}
		// Skipped keeps the dump for the shorter skippedTTL.
		untilExpiry, _ = r.untilExpiry(cd, policy)
		return untilExpiry, nil
	}
	if cd.Spec.Size > storage.MaxObjectSize {
		// No store is asked to take it, and nothing is sized by the claim:
		// the file stays on the node, for someone to fetch by hand.
		msg := fmt.Sprintf("The dump is %s, over the %s CoreDog writes as one object; it stays on node %s",
			coredogv1.DisplaySize(cd.Spec.Size), coredogv1.DisplaySize(storage.MaxObjectSize), cd.Spec.NodeName)
		r.finish(ctx, cd, coredogv1.PhaseFailed, coredogv1.ReasonTooLarge, msg)
		r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventUploadFailed, "Upload", "%s", msg)
		return untilExpiry, nil
	}
	key, err := r.Uploader.Key(cd, policy)
	if err != nil {
		// A template that renders an unsafe key for this dump: nothing to retry.
		r.finish(ctx, cd, coredogv1.PhaseFailed, coredogv1.ReasonInvalidKeyTemplate, err.Error())
		r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventUploadFailed, "Upload", "%s", err.Error())
		return untilExpiry, nil
	}
	// The key is fixed before the first attempt, so that every retry,
	// by this manager or the next leader, writes the same objects.
	cd.Status.Phase = coredogv1.PhaseUploading
	cd.Status.Storage = key
	cd.Status.Reason = coredogv1.ReasonUploadPending
	cd.Status.Message = "Waiting to stream the dump from its agent into " + key.URL
	setCondition(cd, r.now(), coredogv1.ConditionUploaded, metav1.ConditionFalse, coredogv1.ReasonUploadPending, cd.Status.Message)
	return ctrl.Result{RequeueAfter: startUploadDelay}, nil
}

// reconcileUploading makes one upload attempt once the backoff of the last
// failed one has passed: success makes the dump Uploaded, the last allowed
// failure Failed, any other failure schedules the next attempt. The attempt
// starts only after the API server confirmed its claim (see claimAttempt).
func (r *CoreDumpReconciler) reconcileUploading(ctx context.Context, orig, cd *coredogv1.CoreDump, policy *coredogv1.CoreDumpPolicy,
	untilExpiry ctrl.Result, claimed *bool) (ctrl.Result, error) {
	// The failed attempt's status update comes back as a watch event that
	// reconciles the dump at once: the backoff is waited out here.
	if at := cd.Status.NextAttemptAt; at != nil {
		if wait := at.Sub(r.now()); wait > 0 {
			return ctrl.Result{RequeueAfter: wait}, nil
		}
	}
	if err := r.claimAttempt(ctx, orig, cd); err != nil {
		return ctrl.Result{}, err
	}
	*claimed = true
	start := r.now()
	stored, analysis, err := r.Uploader.Upload(ctx, cd, policy)
	r.Metrics.uploadAttempt(cd.Spec.PolicyName, err)
	if err != nil {
		if cd.Status.Attempts >= r.MaxAttempts {
			cd.Status.NextAttemptAt = nil
			msg := fmt.Sprintf("Upload failed %d times, giving up: %v", cd.Status.Attempts, err)
			r.finish(ctx, cd, coredogv1.PhaseFailed, coredogv1.ReasonUploadFailed, msg)
			r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventUploadFailed, "Upload", "%s", msg)
			return untilExpiry, nil
		}
		delay := backoff(cd.Status.Attempts)
		cd.Status.NextAttemptAt = &metav1.Time{Time: r.now().Add(delay)}
		cd.Status.Reason = coredogv1.ReasonUploadRetrying
		cd.Status.Message = fmt.Sprintf("Attempt %d failed, retrying in %s: %v", cd.Status.Attempts, delay, err)
		setCondition(cd, r.now(), coredogv1.ConditionUploaded, metav1.ConditionFalse, coredogv1.ReasonUploadRetrying, cd.Status.Message)
		if cd.Status.Attempts == min(warnAfterAttempts, r.MaxAttempts-1) {
			r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventUploadRetrying, "Upload",
				"Upload failed %d times; the dump stays on node %s and is retried with backoff (up to %d attempts): %v",
				cd.Status.Attempts, cd.Spec.NodeName, r.MaxAttempts, err)
		}
		ctrl.LoggerFrom(ctx).Info("Upload failed; retrying", "attempt", cd.Status.Attempts, "retryIn", delay.String(), "err", err.Error())
		return ctrl.Result{RequeueAfter: delay}, nil
	}
	cd.Status.NextAttemptAt = nil
	cd.Status.Storage = stored
	// A merge patch from orig: status.analysis.modules, which the agent's
	// module collection writes, is left as it is.
	cd.Status.Analysis = upload.MergeAnalysis(cd.Status.Analysis, analysis)
	r.storeModules(ctx, cd, policy)
	r.Metrics.observeUpload(stored.StoredSize, r.now().Sub(start), cd.CrashTime(), stored.UploadedAt.Time)
	r.finish(ctx, cd, coredogv1.PhaseUploaded, coredogv1.ReasonUploaded, "Stored at "+stored.URL)
	return untilExpiry, nil
}

// claimAttempt counts the attempt in the status (attempts+1) with a patch
// that carries the resourceVersion this reconcile read: the API server
// takes it only if no one changed the dump since. A reconcile that read an
// outdated copy from the cache (the informer lags behind the writes, most
// under load), such as one that still sees Uploading after the last
// attempt's Uploaded was written, gets a conflict and uploads nothing, and
// of two reconciles that read the same copy only one gets through, since
// each claim changes the dump. An attempt a crash cut short stays counted,
// so a dump that keeps killing the manager ends Failed.
func (r *CoreDumpReconciler) claimAttempt(ctx context.Context, orig, cd *coredogv1.CoreDump) error {
	// The message stays the last attempt's outcome until this one has its own.
	cd.Status.Attempts++
	obj := cd.DeepCopy()
	if err := r.Status().Patch(ctx, obj, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("%w: %w", errNotClaimed, err)
	}
	// What the server now holds is where the next patch starts from.
	orig.ResourceVersion, orig.Status = obj.ResourceVersion, *obj.Status.DeepCopy()
	cd.ResourceVersion = obj.ResourceVersion
	return nil
}

// finish puts a dump in a terminal phase, counts it and tells people.
func (r *CoreDumpReconciler) finish(ctx context.Context, cd *coredogv1.CoreDump, phase coredogv1.Phase, reason, msg string) {
	cd.Status.Phase, cd.Status.Reason, cd.Status.Message = phase, reason, msg
	status := metav1.ConditionFalse
	if phase == coredogv1.PhaseUploaded {
		status = metav1.ConditionTrue
	}
	setCondition(cd, r.now(), coredogv1.ConditionUploaded, status, reason, msg)
	r.Metrics.finished(cd)
	r.tellPod(ctx, cd)
	r.markNotificationsDue(ctx, cd)
}

// markNotificationsDue records which sinks the dump is due at; the
// annotation is written with the final phase, and the notifications go out
// once that is stored (see notify).
func (r *CoreDumpReconciler) markNotificationsDue(ctx context.Context, cd *coredogv1.CoreDump) {
	if r.Notifier == nil {
		return
	}
	p, err := r.policy(ctx, cd.Spec.PolicyName)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("No notifications for this dump: its policy could not be read", "err", err.Error())
		return
	}
	r.Notifier.MarkDue(ctx, cd, p)
}

// reconcileFinal queues the notifications a dump in its final phase still
// owes. It never fails or delays the reconcile: notification trouble only
// shows in the policy's NotificationsReady condition and in the log.
func (r *CoreDumpReconciler) reconcileFinal(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy, res ctrl.Result) ctrl.Result {
	if r.Notifier == nil || p == nil {
		return res
	}
	wait, err := r.Notifier.QueuePending(ctx, cd, p)
	if err != nil {
		ctrl.LoggerFrom(ctx).Info("Queueing notifications failed; trying again later", "err", err.Error())
		wait = 30 * time.Second
	}
	if wait > 0 && (res.RequeueAfter <= 0 || wait < res.RequeueAfter) {
		res.RequeueAfter = wait
	}
	return res
}

// dumpsSharingBudget lists the CoreDumps that draw on the same rate-limit
// budget as cd, for throttled dumps' once-per-window notifications.
func dumpsSharingBudget(c client.Reader, namespace string) notify.PeersFunc {
	return func(ctx context.Context, cd *coredogv1.CoreDump) ([]coredogv1.CoreDump, error) {
		var list coredogv1.CoreDumpList
		if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingFields{indexDumpSigKey: throttle.Key(cd)}); err != nil {
			return nil, err
		}
		return list.Items, nil
	}
}

// tellPod records a CoreDumped event on the pod that crashed, or on the
// CoreDump itself when no pod is known.
func (r *CoreDumpReconciler) tellPod(ctx context.Context, cd *coredogv1.CoreDump) {
	p := cd.Spec.Process
	what := fmt.Sprintf("%s (pid %d) was killed by %s", orUnknown(p.Executable), p.PID, orUnknown(p.SignalName))
	where := "not stored: " + cd.Status.Message
	if cd.Status.Phase == coredogv1.PhaseUploaded && cd.Status.Storage != nil {
		where = "stored at " + cd.Status.Storage.URL
	}
	ref := cd.Status.Pod
	if ref == nil || ref.Name == "" {
		r.Recorder.Eventf(cd, nil, corev1.EventTypeNormal, coredogv1.EventCoreDumped, "Capture", "%s on node %s; owner unknown; %s", what, cd.Spec.NodeName, where)
		return
	}
	var pod corev1.Pod
	if err := r.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &pod); err != nil || string(pod.UID) != ref.UID {
		// The pod is gone (or was replaced); the CoreDump keeps the record.
		r.Recorder.Eventf(cd, nil, corev1.EventTypeNormal, coredogv1.EventCoreDumped, "Capture",
			"%s in pod %s/%s, container %s; %s", what, ref.Namespace, ref.Name, orUnknown(ref.Container), where)
		return
	}
	r.Recorder.Eventf(&pod, cd, corev1.EventTypeNormal, coredogv1.EventCoreDumped, "Capture", "Container %s: %s; core dump %s %s", orUnknown(ref.Container), what, cd.Name, where)
}

func (r *CoreDumpReconciler) policy(ctx context.Context, name string) (*coredogv1.CoreDumpPolicy, error) {
	var p coredogv1.CoreDumpPolicy
	err := r.Get(ctx, client.ObjectKey{Name: name}, &p)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading CoreDumpPolicy %s: %w", name, err)
	}
	return &p, nil
}

// resolvePod finds the pod that crashed among the pods on the dump's node
// and records it; the record survives the pod.
func (r *CoreDumpReconciler) resolvePod(ctx context.Context, cd *coredogv1.CoreDump) error {
	var pods corev1.PodList
	if err := r.List(ctx, &pods, client.MatchingFields{indexPodNode: cd.Spec.NodeName}); err != nil {
		return fmt.Errorf("listing pods on node %s: %w", cd.Spec.NodeName, err)
	}
	crash := podresolve.Crash{
		NodeName:    cd.Spec.NodeName,
		ContainerID: cd.Spec.ContainerID,
		Hostname:    cd.Spec.Process.Hostname,
		Executable:  cd.Spec.Process.Executable,
		Signal:      int(cd.Spec.Process.Signal),
	}
	if t := cd.Spec.Process.DumpedAt; t != nil {
		crash.DumpedAt = t.Time
	}
	res := podresolve.Resolve(crash, pods.Items, terminationWindow)
	ref := &coredogv1.PodReference{ResolvedBy: res.ResolvedBy}
	status := metav1.ConditionFalse
	reason := coredogv1.ReasonUnresolved
	if res.Pod != nil {
		ref.Namespace, ref.Name, ref.UID = res.Pod.Namespace, res.Pod.Name, string(res.Pod.UID)
		ref.Container, ref.Image, ref.ImageID = res.Container, res.Image, res.ImageID
		w, err := podresolve.WorkloadOf(ctx, r.APIReader, res.Pod)
		if err != nil {
			return fmt.Errorf("resolving the workload of pod %s: %w", klog.KObj(res.Pod), err)
		}
		ref.WorkloadKind, ref.WorkloadName = w.Kind, w.Name
		status, reason = metav1.ConditionTrue, coredogv1.ReasonResolved
	}
	cd.Status.Pod = ref
	setCondition(cd, r.now(), coredogv1.ConditionPodResolved, status, reason, res.Message)
	return nil
}

// decide applies the policy's filters in order; a non-empty reason skips the dump.
func (r *CoreDumpReconciler) decide(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (string, string, error) {
	if cd.Spec.RefusedReason != "" {
		return cd.Spec.RefusedReason, "The agent did not keep the file: the node's core-dump disk limit was reached", nil
	}
	selected, why, err := r.selected(ctx, cd, p)
	if err != nil || !selected {
		return coredogv1.ReasonNotSelected, why, err
	}
	if max := p.Spec.Limits.MaxDumpSize; max != nil && cd.Spec.Size > max.Value() {
		return coredogv1.ReasonTooLarge, fmt.Sprintf("The dump is %s, over the policy's maxDumpSize of %s", coredogv1.DisplaySize(cd.Spec.Size), max.String()), nil
	}
	ok, err := r.withinRateLimit(ctx, cd, p)
	if err != nil {
		return "", "", err
	}
	if !ok {
		count, window := throttle.Limit(p)
		return coredogv1.ReasonThrottled, fmt.Sprintf("More than %d dumps of %s with signature %s within %s; counted, not stored",
			count, throttle.Workload(cd), cd.Spec.Signature, window), nil
	}
	return "", "", nil
}

func (r *CoreDumpReconciler) selected(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (bool, string, error) {
	sel := p.Spec.Selector
	if sel.NamespaceSelector == nil && sel.PodSelector == nil {
		return true, "", nil
	}
	ref := cd.Status.Pod
	if ref == nil || ref.Name == "" {
		return false, "The policy keeps only dumps of pods its selectors match, and this dump's pod is unknown", nil
	}
	if sel.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(sel.NamespaceSelector)
		if err != nil {
			return false, fmt.Sprintf("The policy's namespaceSelector is invalid: %v", err), nil
		}
		var ns corev1.Namespace
		if err := r.Get(ctx, client.ObjectKey{Name: ref.Namespace}, &ns); client.IgnoreNotFound(err) != nil {
			return false, "", fmt.Errorf("reading namespace %s: %w", ref.Namespace, err)
		}
		if !s.Matches(labels.Set(ns.Labels)) {
			return false, fmt.Sprintf("Namespace %s is not selected by the policy's namespaceSelector", ref.Namespace), nil
		}
	}
	if sel.PodSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(sel.PodSelector)
		if err != nil {
			return false, fmt.Sprintf("The policy's podSelector is invalid: %v", err), nil
		}
		var pod corev1.Pod
		err = r.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &pod)
		if client.IgnoreNotFound(err) != nil {
			return false, "", fmt.Errorf("reading pod %s/%s: %w", ref.Namespace, ref.Name, err)
		}
		if err != nil || string(pod.UID) != ref.UID {
			return false, fmt.Sprintf("Pod %s/%s is gone; its labels cannot be matched against the policy's podSelector", ref.Namespace, ref.Name), nil
		}
		if !s.Matches(labels.Set(pod.Labels)) {
			return false, fmt.Sprintf("Pod %s/%s is not selected by the policy's podSelector", ref.Namespace, ref.Name), nil
		}
	}
	return true, "", nil
}

func (r *CoreDumpReconciler) withinRateLimit(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (bool, error) {
	var list coredogv1.CoreDumpList
	// Read-only and without copies: a crash loop or a mass crash puts
	// thousands of dumps under one key, and each decision reads them all.
	if err := r.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingFields{indexDumpSigKey: throttle.Key(cd)},
		client.UnsafeDisableDeepCopy); err != nil {
		return false, fmt.Errorf("listing dumps with the same signature: %w", err)
	}
	others := make([]throttle.Dump, 0, len(list.Items))
	for i := range list.Items {
		others = append(others, throttle.Of(&list.Items[i]))
	}
	r.ledger.Apply(others)
	count, window := throttle.Limit(p)
	if !throttle.Allowed(throttle.Of(cd), others, int(count), window) {
		return false, nil
	}
	// Until the cache shows it Uploading, the ledger counts it for the
	// dumps decided next.
	r.ledger.Spend(cd.Name, r.now())
	return true, nil
}

// reconcileDelete removes the stored objects, then the finalizer.
func (r *CoreDumpReconciler) reconcileDelete(ctx context.Context, cd *coredogv1.CoreDump, policy *coredogv1.CoreDumpPolicy) (ctrl.Result, error) {
	if !controllerutil.ContainsFinalizer(cd, coredogv1.FinalizerCleanup) {
		return ctrl.Result{}, nil
	}
	err := r.Uploader.DeleteStored(ctx, cd, policy)
	if errors.Is(err, upload.ErrNotOwned) {
		// Another dump's object at this dump's key (a forged CoreDump
		// pointed at it) stays; retrying would not change whose it is.
		ctrl.LoggerFrom(ctx).Info("Stored objects that are not this dump's are left", "err", err.Error())
		r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventCleanupFailed, "Delete",
			"Objects at this dump's key are not this dump's and were left: %v", err)
		err = nil
	}
	if err == nil {
		err = r.releaseModules(ctx, cd, policy)
	}
	if err != nil {
		r.mu.Lock()
		if r.cleanupFailures == nil {
			r.cleanupFailures = map[string]int{}
		}
		r.cleanupFailures[cd.Name]++
		n := r.cleanupFailures[cd.Name]
		r.mu.Unlock()
		if n < cleanupGiveUp {
			ctrl.LoggerFrom(ctx).Info("Deleting stored objects failed; retrying", "attempt", n, "err", err.Error())
			return ctrl.Result{RequeueAfter: backoff(int32(n))}, nil
		}
		r.Recorder.Eventf(cd, nil, corev1.EventTypeWarning, coredogv1.EventCleanupFailed, "Delete",
			"Giving up deleting the stored dump after %d attempts; remove it by hand: %v", n, err)
	}
	r.mu.Lock()
	delete(r.cleanupFailures, cd.Name)
	r.mu.Unlock()
	// The finalizer goes only if the copy the cleanup read was current: an
	// outdated one may lack the storage key of an upload that finished since.
	patch := client.MergeFromWithOptions(cd.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(cd, coredogv1.FinalizerCleanup)
	err = r.Patch(ctx, cd, patch)
	if apierrors.IsConflict(err) {
		return ctrl.Result{RequeueAfter: staleRetry}, nil
	}
	return ctrl.Result{}, client.IgnoreNotFound(err)
}

// setLabels puts the labels and annotations of DESIGN section 3 on a dump.
func (r *CoreDumpReconciler) setLabels(cd *coredogv1.CoreDump) {
	l := map[string]string{
		coredogv1.LabelNode:   coredogv1.LabelValue(cd.Spec.NodeName),
		coredogv1.LabelPolicy: coredogv1.LabelValue(cd.Spec.PolicyName),
	}
	if v := cd.Spec.Process.SignalName; v != "" {
		l[coredogv1.LabelSignal] = coredogv1.LabelValue(v)
	}
	if v := cd.Spec.Signature; v != "" {
		l[coredogv1.LabelSignature] = coredogv1.LabelValue(v)
	}
	a := map[string]string{}
	if ref := cd.Status.Pod; ref != nil && ref.Name != "" {
		l[coredogv1.LabelNamespace] = coredogv1.LabelValue(ref.Namespace)
		l[coredogv1.LabelPod] = coredogv1.LabelValue(ref.Name)
		a[coredogv1.AnnotationPodUID] = ref.UID
		a[coredogv1.AnnotationContainer] = ref.Container
		a[coredogv1.AnnotationImage] = ref.Image
		if ref.WorkloadKind != "" {
			a[coredogv1.AnnotationWorkload] = ref.WorkloadKind + "/" + ref.WorkloadName
		}
	}
	if cd.Labels == nil {
		cd.Labels = map[string]string{}
	}
	maps.Copy(cd.Labels, l)
	for k, v := range a {
		if v == "" {
			continue
		}
		if cd.Annotations == nil {
			cd.Annotations = map[string]string{}
		}
		cd.Annotations[k] = v
	}
}

// writeBack patches what a reconcile changed: status through the status
// subresource, labels and annotations through the object, each once and only
// when changed. Each patch starts from its own copy, since a patch response
// overwrites the object it is given. With locked, the status patch carries
// the resourceVersion the reconcile read, so that a decision taken on an
// outdated cached copy (Pending, when the dump is Uploaded already) is
// refused with a conflict rather than written over a later phase; an upload
// attempt's outcome is written without it, since its claim already was.
func (r *CoreDumpReconciler) writeBack(ctx context.Context, orig, cd *coredogv1.CoreDump, locked bool) error {
	var errs []error
	if !equality.Semantic.DeepEqual(orig.Status, cd.Status) {
		obj := cd.DeepCopy()
		patch := client.MergeFrom(orig)
		if locked {
			patch = client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})
		}
		err := r.Status().Patch(ctx, obj, patch)
		if apierrors.IsConflict(err) {
			return fmt.Errorf("patching status of %s: %w", cd.Name, err)
		}
		if client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("patching status of %s: %w", cd.Name, err))
		}
	}
	if !equality.Semantic.DeepEqual(orig.Labels, cd.Labels) || !equality.Semantic.DeepEqual(orig.Annotations, cd.Annotations) {
		obj := orig.DeepCopy()
		obj.Labels, obj.Annotations = cd.Labels, cd.Annotations
		if err := r.Patch(ctx, obj, client.MergeFrom(orig)); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("patching labels of %s: %w", cd.Name, err))
		}
	}
	return errors.Join(errs...)
}

func (r *CoreDumpReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// SetupWithManager registers the reconciler and the indexes it lists by.
func (r *CoreDumpReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("coredump").
		For(&coredogv1.CoreDump{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrent}).
		Complete(r)
}

// setupIndexes registers the field indexes both reconcilers use.
func setupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &corev1.Pod{}, indexPodNode, func(o client.Object) []string {
		return []string{o.(*corev1.Pod).Spec.NodeName}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &coredogv1.CoreDump{}, indexDumpPolicy, func(o client.Object) []string {
		return []string{o.(*coredogv1.CoreDump).Spec.PolicyName}
	}); err != nil {
		return err
	}
	if err := idx.IndexField(ctx, &coredogv1.CoreDump{}, indexDumpModule, func(o client.Object) []string {
		return storedBuildIDs(o.(*coredogv1.CoreDump))
	}); err != nil {
		return err
	}
	return idx.IndexField(ctx, &coredogv1.CoreDump{}, indexDumpSigKey, func(o client.Object) []string {
		return []string{throttle.Key(o.(*coredogv1.CoreDump))}
	})
}

// backoff is 1s, 2s, 4s, ... capped at five minutes.
func backoff(attempt int32) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := time.Duration(float64(backoffBase) * math.Pow(2, float64(attempt-1)))
	if d > backoffCap || d <= 0 {
		return backoffCap
	}
	return d
}

// untilExpiry is the requeue that brings cd back when its retention ends;
// expired when it has.
func (r *CoreDumpReconciler) untilExpiry(cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (res ctrl.Result, expired bool) {
	left := cd.CreationTimestamp.Add(retentionOf(cd, p)).Sub(r.now())
	if left <= 0 {
		return ctrl.Result{}, true
	}
	return ctrl.Result{RequeueAfter: left}, false
}

// retentionOf is how long cd is kept: the policy's ttl, or for a dump that
// was not stored (Skipped: not selected, throttled, refused on the node) its
// skippedTTL, never longer than ttl. A crash loop's records go within the
// hour, the dumps someone may open stay.
func retentionOf(cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) time.Duration {
	ttl := ttlOf(p)
	if cd.Status.Phase != coredogv1.PhaseSkipped {
		return ttl
	}
	skipped := coredogv1.DefaultSkippedTTL
	if p != nil {
		skipped = durationOr(p.Spec.Retention.SkippedTTL, coredogv1.DefaultSkippedTTL)
	}
	return min(skipped, ttl)
}

func ttlOf(p *coredogv1.CoreDumpPolicy) time.Duration {
	if p == nil {
		return coredogv1.DefaultRetentionTTL
	}
	return durationOr(p.Spec.Retention.TTL, coredogv1.DefaultRetentionTTL)
}

func durationOr(d *metav1.Duration, def time.Duration) time.Duration {
	if d == nil || d.Duration <= 0 {
		return def
	}
	return d.Duration
}

func orUnknown(s string) string {
	if s == "" {
		return "(unknown)"
	}
	return s
}
