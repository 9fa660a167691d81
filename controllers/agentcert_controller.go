package controllers

import (
	"context"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
)

// AgentCertReconciler issues each agent its own serving certificate. An
// agent makes its serving key at start and puts a certificate request into
// its Lease; this reconciler signs it with the policy's CA for the node that
// holds the Lease (the agents' admission policy makes an agent hold its Lease
// in its own node's name) and writes the certificate back into the Lease,
// renewing it after two thirds of its life, for a new key, or under a new
// CA. From the request it takes the public key alone: the certificate names
// the node and policy the manager chose (pki.AgentIdentity). It reads
// Leases, policies and CA Secrets; it writes one Lease annotation, nothing
// else.
type AgentCertReconciler struct {
	client.Client
	// Namespace is the controller's namespace: Leases and Secrets live there.
	Namespace string
	// Clock is injectable for tests; nil means the real clock.
	Clock clock.PassiveClock
}

// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=coredog-system,resources=leases,verbs=get;list;watch;patch

// Reconcile brings one agent Lease's certificate up to date.
func (r *AgentCertReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrl.LoggerFrom(ctx)
	var lease coordinationv1.Lease
	if err := r.Get(ctx, req.NamespacedName, &lease); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	csr := lease.Annotations[agentlease.AnnotationServingCSR]
	if csr == "" || lease.Spec.HolderIdentity == nil {
		return ctrl.Result{}, nil
	}
	node := *lease.Spec.HolderIdentity
	policy, err := r.policyOf(ctx, lease.Name, node)
	if err != nil || policy == "" {
		if policy == "" && err == nil {
			log.V(1).Info("No policy has this agent Lease for its holder", "lease", klog.KObj(&lease))
		}
		return ctrl.Result{}, err
	}
	// The request is the agent's word: an error says what was wrong with
	// it, never what it holds.
	pub, err := pki.CheckAgentCSR([]byte(csr))
	if err != nil {
		log.Info("Not signing the agent's certificate request", "lease", klog.KObj(&lease), "node", node, "err", err.Error())
		return ctrl.Result{}, nil
	}
	ca, err := r.ca(ctx, policy)
	if err != nil {
		return ctrl.Result{}, err
	}
	now := r.now()
	current := []byte(lease.Annotations[agentlease.AnnotationServingCert])
	renew, why := pki.AgentCertNeedsRenewal(current, ca.Cert, pub, policy, node, now)
	if !renew {
		return ctrl.Result{RequeueAfter: untilRenewal(current, now)}, nil
	}
	certPEM, err := ca.SignAgentCSR([]byte(csr), policy, node, now)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("signing the serving certificate of node %s: %w", node, err)
	}
	// Against the Lease as read: a certificate goes only next to the
	// request it answers. An agent's update in between is a conflict, and
	// the next reconcile reads its request afresh.
	patch := client.MergeFromWithOptions(lease.DeepCopy(), client.MergeFromWithOptimisticLock{})
	lease.Annotations[agentlease.AnnotationServingCert] = string(certPEM)
	if err := r.Patch(ctx, &lease, patch); err != nil {
		if apierrors.IsNotFound(err) {
			return ctrl.Result{}, nil
		}
		if apierrors.IsConflict(err) {
			// Read the agent's update; an update event of the request
			// brings the Lease back too.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		}
		return ctrl.Result{}, fmt.Errorf("writing the serving certificate of node %s into Lease %s: %w", node, lease.Name, err)
	}
	log.Info("Issued an agent's serving certificate", "lease", klog.KObj(&lease), "node", node, "policy", policy, "why", why)
	return ctrl.Result{RequeueAfter: untilRenewal(certPEM, now)}, nil
}

// policyOf finds the policy whose agent on node holds the Lease named name;
// "" when none does. Lease names alone are ambiguous (node "b.c" of policy
// "p.a" and node "a.b.c" of policy "p" share "p.a.b.c"); with the holder
// they are not.
func (r *AgentCertReconciler) policyOf(ctx context.Context, name, node string) (string, error) {
	var policies coredogv1.CoreDumpPolicyList
	if err := r.List(ctx, &policies); err != nil {
		return "", fmt.Errorf("listing policies: %w", err)
	}
	for _, p := range policies.Items {
		if p.DeletionTimestamp.IsZero() && agentlease.Name(p.Name, node) == name {
			return p.Name, nil
		}
	}
	return "", nil
}

func (r *AgentCertReconciler) ca(ctx context.Context, policy string) (*pki.CA, error) {
	var s corev1.Secret
	name := agentset.CASecretName(policy)
	if err := r.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: name}, &s); err != nil {
		return nil, fmt.Errorf("reading the CA of policy %s (Secret %s): %w", policy, name, err)
	}
	ca, err := pki.ParseCA(s.Data[pki.CACertKey], s.Data[pki.CAKeyKey])
	if err != nil {
		return nil, fmt.Errorf("reading the CA of policy %s: %w", policy, err)
	}
	return ca, nil
}

func (r *AgentCertReconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// untilRenewal is how long a certificate may stay before it is renewed.
func untilRenewal(certPEM []byte, now time.Time) time.Duration {
	at, ok := pki.RenewAt(certPEM)
	if !ok {
		return time.Minute
	}
	return max(at.Sub(now), time.Second)
}

// leasesOfCA maps a policy's CA Secret to its agents' Leases, whose
// certificates a new CA replaces.
func (r *AgentCertReconciler) leasesOfCA(ctx context.Context, o client.Object) []reconcile.Request {
	policy := o.GetLabels()[coredogv1.LabelPolicy]
	if policy == "" || o.GetName() != agentset.CASecretName(policy) {
		return nil
	}
	return r.leasesOf(ctx, policy)
}

// certAnnotationsChanged lets through the Lease updates that can call for a
// certificate: a new request, or a certificate that changed or went. An
// agent's heartbeat (renew time, local bytes) does not.
func certAnnotationsChanged(e event.UpdateEvent) bool {
	a, b := e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()
	return a[agentlease.AnnotationServingCSR] != b[agentlease.AnnotationServingCSR] ||
		a[agentlease.AnnotationServingCert] != b[agentlease.AnnotationServingCert] ||
		!equalHolder(e.ObjectOld, e.ObjectNew)
}

func equalHolder(a, b client.Object) bool {
	la, oka := a.(*coordinationv1.Lease)
	lb, okb := b.(*coordinationv1.Lease)
	if !oka || !okb {
		return false
	}
	ha, hb := la.Spec.HolderIdentity, lb.Spec.HolderIdentity
	return (ha == nil) == (hb == nil) && (ha == nil || *ha == *hb)
}

// SetupWithManager registers the reconciler for agent Leases (those with the
// policy label, in the controller's namespace; the cache holds no others).
func (r *AgentCertReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		Named("agentcert").
		For(&coordinationv1.Lease{}, builder.WithPredicates(
			predicate.NewPredicateFuncs(func(o client.Object) bool {
				_, ok := o.GetLabels()[coredogv1.LabelPolicy]
				return ok && o.GetNamespace() == r.Namespace
			}),
			predicate.Funcs{UpdateFunc: certAnnotationsChanged},
		)).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.leasesOfCA)).
		Watches(&coredogv1.CoreDumpPolicy{}, handler.EnqueueRequestsFromMapFunc(r.leasesOfPolicy),
			builder.WithPredicates(predicate.Funcs{UpdateFunc: func(event.UpdateEvent) bool { return false }})).
		Complete(r)
}

// leasesOfPolicy maps a new policy to its agents' Leases: an agent that
// started before its policy was seen waits for a certificate.
func (r *AgentCertReconciler) leasesOfPolicy(ctx context.Context, o client.Object) []reconcile.Request {
	return r.leasesOf(ctx, o.GetName())
}

// leasesOf lists the agent Leases labelled with policy.
func (r *AgentCertReconciler) leasesOf(ctx context.Context, policy string) []reconcile.Request {
	var leases coordinationv1.LeaseList
	if err := r.List(ctx, &leases, client.InNamespace(r.Namespace), client.MatchingLabels{coredogv1.LabelPolicy: coredogv1.LabelValue(policy)}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing the agent Leases of a policy", "policy", policy)
		return nil
	}
	out := make([]reconcile.Request, 0, len(leases.Items))
	for _, l := range leases.Items {
		out = append(out, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: l.Namespace, Name: l.Name}})
	}
	return out
}
