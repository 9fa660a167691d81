package controllers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/controllers/notify"
	"github.com/coredog/coredog/internal/storage"
)

// FieldManager is the server-side apply field manager of everything the controller applies.
const FieldManager = "coredog-controller"

// resyncPeriod re-checks certificates for rotation even when nothing else happens.
const resyncPeriod = 12 * time.Hour

// CoreDumpPolicyReconciler turns a CoreDumpPolicy into its agents: the agent
// DaemonSet, the private CA and the agents' serving certificate. It reports
// agent counts, storage problems and conflicts in the policy's status. It
// does not handle CoreDumps.
type CoreDumpPolicyReconciler struct {
	client.Client
	// APIReader reads the policy's Secrets when the cache does not have
	// them yet; nil reads the cache alone.
	APIReader client.Reader
	Scheme    *runtime.Scheme
	// Namespace is the controller's namespace: agents, Secrets and CoreDumps live there.
	Namespace string
	// AgentImage is the agent image when a policy names none.
	AgentImage string
	// AgentServiceAccount is the ServiceAccount agents run as.
	AgentServiceAccount string
	// Clock is injectable for tests; nil means the real clock.
	Clock clock.PassiveClock
	// Notifier reports how notification sinks fare; nil leaves the
	// NotificationsReady condition out.
	Notifier *notify.Notifier
}

// +kubebuilder:rbac:groups=coredog.io,resources=coredumppolicies,verbs=get;list;watch
// +kubebuilder:rbac:groups=coredog.io,resources=coredumppolicies/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=coredog.io,resources=coredumppolicies/finalizers,verbs=update
// +kubebuilder:rbac:groups=apps,namespace=coredog-system,resources=daemonsets,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",namespace=coredog-system,resources=secrets,verbs=get;list;watch;create;update;patch;delete

// Reconcile brings one policy's agents and status up to date.
func (r *CoreDumpPolicyReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	log := ctrlLog(ctx)
	var p coredogv1.CoreDumpPolicy
	if err := r.Get(ctx, req.NamespacedName, &p); err != nil {
		// Owned objects go with the policy through their owner references.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !p.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	orig := p.DeepCopy()
	defer func() {
		if equality.Semantic.DeepEqual(orig.Status, p.Status) {
			return
		}
		if err := r.Status().Patch(ctx, &p, client.MergeFrom(orig)); err != nil && !apierrors.IsNotFound(err) {
			retErr = errors.Join(retErr, fmt.Errorf("patching status of %s: %w", p.Name, err))
		}
	}()
	p.Status.ObservedGeneration = p.Generation
	p.Status.DaemonSetName = ""

	storageOK := r.checkStorage(ctx, &p)
	r.checkNotifications(ctx, &p)
	if err := r.countDumps(ctx, &p); err != nil {
		return ctrl.Result{}, err
	}

	var all coredogv1.CoreDumpPolicyList
	if err := r.List(ctx, &all); err != nil {
		return ctrl.Result{}, fmt.Errorf("listing policies: %w", err)
	}
	if winner, lost := Conflicts(all.Items)[p.Name]; lost {
		msg := fmt.Sprintf("CoreDumpPolicy %s, which is older, already runs agents for an overlapping set of nodes and hostPath %s; "+
			"this policy runs none until the overlap is removed (make the nodeSelectors disjoint or use another hostPath)", winner, hostPath(&p))
		setCondition(&p, r.now(), coredogv1.ConditionConflict, metav1.ConditionTrue, coredogv1.ReasonOverlap, msg)
		setCondition(&p, r.now(), coredogv1.ConditionReady, metav1.ConditionFalse, coredogv1.ReasonOverlap, msg)
		p.Status.DesiredAgents, p.Status.ReadyAgents = 0, 0
		return ctrl.Result{}, r.deleteDaemonSet(ctx, &p)
	}
	setCondition(&p, r.now(), coredogv1.ConditionConflict, metav1.ConditionFalse, coredogv1.ReasonNoOverlap, "No older policy overlaps this one")

	tlsHash, err := r.ensureTLS(ctx, &p)
	if err != nil {
		setCondition(&p, r.now(), coredogv1.ConditionReady, metav1.ConditionFalse, coredogv1.ReasonTLSFailed, err.Error())
		return ctrl.Result{}, err
	}
	ds := agentset.RenderDaemonSet(&p, agentset.Options{
		Namespace:      r.Namespace,
		DefaultImage:   r.AgentImage,
		ServiceAccount: r.AgentServiceAccount,
		TLSHash:        tlsHash,
	})
	if err := r.apply(ctx, &p, ds); err != nil {
		return ctrl.Result{}, err
	}
	// The cache may not have seen a DaemonSet applied a moment ago; its
	// arrival triggers another reconcile through the Owns watch.
	var live appsv1.DaemonSet
	if err := r.Get(ctx, client.ObjectKeyFromObject(ds), &live); client.IgnoreNotFound(err) != nil {
		return ctrl.Result{}, fmt.Errorf("reading DaemonSet %s: %w", ds.Name, err)
	}
	p.Status.DaemonSetName = live.Name
	p.Status.DesiredAgents = live.Status.DesiredNumberScheduled
	p.Status.ReadyAgents = live.Status.NumberReady

	switch {
	case !storageOK:
		c := meta.FindStatusCondition(p.Status.Conditions, coredogv1.ConditionStorageValid)
		setCondition(&p, r.now(), coredogv1.ConditionReady, metav1.ConditionFalse, coredogv1.ReasonStorageInvalid,
			"Agents capture dumps but none can be stored: "+c.Message)
	case live.Status.DesiredNumberScheduled == 0:
		setCondition(&p, r.now(), coredogv1.ConditionReady, metav1.ConditionFalse, coredogv1.ReasonNoNodes,
			"No node runs an agent yet: check the policy's nodeSelector and tolerations")
	case live.Status.NumberReady < live.Status.DesiredNumberScheduled || live.Status.ObservedGeneration < live.Generation:
		setCondition(&p, r.now(), coredogv1.ConditionReady, metav1.ConditionFalse, coredogv1.ReasonAgentsNotReady,
			fmt.Sprintf("%d of %d agents are ready", live.Status.NumberReady, live.Status.DesiredNumberScheduled))
	default:
		setCondition(&p, r.now(), coredogv1.ConditionReady, metav1.ConditionTrue, coredogv1.ReasonAgentsReady,
			fmt.Sprintf("All %d agents are ready", live.Status.NumberReady))
	}
	log.V(1).Info("Reconciled policy", "desired", p.Status.DesiredAgents, "ready", p.Status.ReadyAgents)
	return ctrl.Result{RequeueAfter: resyncPeriod}, nil
}

// checkStorage validates spec.storage and records the StorageValid condition.
func (r *CoreDumpPolicyReconciler) checkStorage(ctx context.Context, p *coredogv1.CoreDumpPolicy) bool {
	reason, msg := validateStorage(ctx, r.Client, r.Namespace, p.Spec.Storage)
	if reason != coredogv1.ReasonStorageValid {
		setCondition(p, r.now(), coredogv1.ConditionStorageValid, metav1.ConditionFalse, reason, msg)
		return false
	}
	setCondition(p, r.now(), coredogv1.ConditionStorageValid, metav1.ConditionTrue, reason, msg)
	return true
}

// checkNotifications records the NotificationsReady condition: sink
// Secrets usable and no sink failing. Policies without sinks have none.
func (r *CoreDumpPolicyReconciler) checkNotifications(ctx context.Context, p *coredogv1.CoreDumpPolicy) {
	if r.Notifier == nil {
		return
	}
	status, reason, msg, ok := r.Notifier.Condition(ctx, p)
	if !ok {
		meta.RemoveStatusCondition(&p.Status.Conditions, coredogv1.ConditionNotificationsReady)
		return
	}
	setCondition(p, r.now(), coredogv1.ConditionNotificationsReady, status, reason, msg)
}

// countDumps fills the policy's dump counters from its CoreDumps.
func (r *CoreDumpPolicyReconciler) countDumps(ctx context.Context, p *coredogv1.CoreDumpPolicy) error {
	var list coredogv1.CoreDumpList
	// Read-only and without copies: this runs on every change of every
	// one of the policy's dumps, of which there may be thousands.
	if err := r.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingFields{indexDumpPolicy: p.Name},
		client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing the policy's CoreDumps: %w", err)
	}
	c := coredogv1.DumpCounters{Captured: int64(len(list.Items))}
	for _, cd := range list.Items {
		c.Counted += seriesCount(&cd)
		switch cd.Status.Phase {
		case coredogv1.PhaseUploaded:
			c.Uploaded++
		case coredogv1.PhaseSkipped:
			c.Skipped++
		case coredogv1.PhaseFailed:
			c.Failed++
		}
	}
	p.Status.Dumps = c
	return nil
}

// validateStorage returns a condition reason and message for storage settings.
func validateStorage(ctx context.Context, c client.Reader, namespace string, s coredogv1.StorageSpec) (string, string) {
	loc, err := storage.ParseURL(s.URL)
	if err != nil {
		return coredogv1.ReasonInvalidStorageURL, fmt.Sprintf("spec.storage.url: %v", err)
	}
	tmpl := s.KeyTemplate
	if tmpl == "" {
		tmpl = coredogv1.DefaultKeyTemplate
	}
	if _, err := storage.ParseKeyTemplate(tmpl); err != nil {
		return coredogv1.ReasonInvalidKeyTemplate, fmt.Sprintf("spec.storage.keyTemplate: %v", err)
	}
	if s.SecretRef != nil {
		var secret corev1.Secret
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: s.SecretRef.Name}, &secret)
		switch {
		case apierrors.IsNotFound(err):
			return coredogv1.ReasonSecretNotFound, fmt.Sprintf("spec.storage.secretRef: Secret %s/%s does not exist", namespace, s.SecretRef.Name)
		case err != nil:
			return coredogv1.ReasonStorageInvalid, fmt.Sprintf("reading Secret %s/%s: %v", namespace, s.SecretRef.Name, err)
		}
		if err := storage.CheckCredentials(loc.Scheme, secret.Data); err != nil {
			return coredogv1.ReasonStorageInvalid, fmt.Sprintf("spec.storage.secretRef: Secret %s/%s: %v", namespace, s.SecretRef.Name, err)
		}
	}
	return coredogv1.ReasonStorageValid, "Storage URL, key template and credentials reference are valid"
}

func (r *CoreDumpPolicyReconciler) deleteDaemonSet(ctx context.Context, p *coredogv1.CoreDumpPolicy) error {
	var ds appsv1.DaemonSet
	err := r.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: agentset.DaemonSetName(p.Name)}, &ds)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading DaemonSet: %w", err)
	}
	if !metav1.IsControlledBy(&ds, p) {
		return nil
	}
	ctrlLog(ctx).Info("Removing agents of a conflicting policy", "daemonset", klog.KObj(&ds))
	if err := r.Delete(ctx, &ds, client.Preconditions{UID: &ds.UID}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting DaemonSet %s: %w", ds.Name, err)
	}
	return nil
}

// apply server-side applies an owned object with a controller reference to the policy.
func (r *CoreDumpPolicyReconciler) apply(ctx context.Context, p *coredogv1.CoreDumpPolicy, obj client.Object) error {
	if err := controllerutil.SetControllerReference(p, obj, r.Scheme); err != nil {
		return fmt.Errorf("setting owner of %s: %w", obj.GetName(), err)
	}
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return fmt.Errorf("converting %s: %w", obj.GetName(), err)
	}
	delete(u, "status")
	unstructured.RemoveNestedField(u, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u, "spec", "template", "metadata", "creationTimestamp")
	ac := client.ApplyConfigurationFromUnstructured(&unstructured.Unstructured{Object: u})
	if err := r.Apply(ctx, ac, client.FieldOwner(FieldManager), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying %s %s: %w", obj.GetObjectKind().GroupVersionKind().Kind, obj.GetName(), err)
	}
	return nil
}

func (r *CoreDumpPolicyReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// SetupWithManager registers the reconciler. Any policy change re-evaluates
// every policy, because one policy's creation or deletion can start or end
// another's conflict; storage Secrets re-evaluate the policies naming them.
func (r *CoreDumpPolicyReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr)
	if r.Notifier != nil {
		// A sink that starts or stops failing re-evaluates its policy.
		b = b.WatchesRawSource(r.Notifier.Source())
	}
	return b.
		Named("coredumppolicy").
		For(&coredogv1.CoreDumpPolicy{}).
		Owns(&appsv1.DaemonSet{}).
		Owns(&corev1.Secret{}).
		Watches(&coredogv1.CoreDumpPolicy{}, handler.EnqueueRequestsFromMapFunc(r.allPolicies),
			builder.WithPredicates(predicate.Funcs{
				// Only creations and deletions, and spec changes, can move a conflict.
				UpdateFunc: func(e event.UpdateEvent) bool { return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() },
			})).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.policiesForSecret)).
		// Counters move when a dump appears, goes, or changes phase. A burst
		// of dumps (a crash loop, thousands of files at once) is counted by
		// one reconcile a second, not one each: every reconcile also applies
		// the policy's Secrets and DaemonSet, and those writes would compete
		// with the uploads' own.
		Watches(&coredogv1.CoreDump{}, countersHandler{}, builder.WithPredicates(predicate.Funcs{
			UpdateFunc: func(e event.UpdateEvent) bool {
				o, n := e.ObjectOld.(*coredogv1.CoreDump), e.ObjectNew.(*coredogv1.CoreDump)
				return o.Status.Phase != n.Status.Phase || seriesCount(o) != seriesCount(n)
			},
		})).
		Complete(r)
}

// seriesCount is how many crashes an agent counted on cd (policy
// status.dumps.counted).
func seriesCount(cd *coredogv1.CoreDump) int64 {
	if cd.Series == nil {
		return 0
	}
	return cd.Series.Count + cd.Series.OtherCount
}

// countersDelay is how long a dump's change waits before its policy's
// counters are recomputed; changes within it share one reconcile.
const countersDelay = time.Second

// countersHandler enqueues a dump's policy after countersDelay. The queue
// keeps one entry per policy, at the earliest time asked, so the changes of
// a burst coalesce.
type countersHandler struct{}

func (countersHandler) enqueue(o client.Object, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	q.AddAfter(reconcile.Request{NamespacedName: types.NamespacedName{Name: o.(*coredogv1.CoreDump).Spec.PolicyName}}, countersDelay)
}

func (h countersHandler) Create(_ context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}

func (h countersHandler) Update(_ context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.ObjectNew, q)
}

func (h countersHandler) Delete(_ context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}

func (h countersHandler) Generic(_ context.Context, e event.GenericEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	h.enqueue(e.Object, q)
}

func (r *CoreDumpPolicyReconciler) allPolicies(ctx context.Context, _ client.Object) []reconcile.Request {
	var list coredogv1.CoreDumpPolicyList
	if err := r.List(ctx, &list); err != nil {
		ctrlLog(ctx).Error(err, "Listing policies")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, p := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
	}
	return reqs
}

func (r *CoreDumpPolicyReconciler) policiesForSecret(ctx context.Context, obj client.Object) []reconcile.Request {
	if obj.GetNamespace() != r.Namespace {
		return nil
	}
	var list coredogv1.CoreDumpPolicyList
	if err := r.List(ctx, &list); err != nil {
		ctrlLog(ctx).Error(err, "Listing policies")
		return nil
	}
	var reqs []reconcile.Request
	for _, p := range list.Items {
		names := notify.SecretNames(&p)
		if ref := p.Spec.Storage.SecretRef; ref != nil {
			names = append(names, ref.Name)
		}
		if slices.Contains(names, obj.GetName()) {
			reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: p.Name}})
		}
	}
	return reqs
}

func ctrlLog(ctx context.Context) logr.Logger { return ctrl.LoggerFrom(ctx) }
