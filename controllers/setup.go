package controllers

import (
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/kubernetes"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/lastwords"
	"github.com/coredog/coredog/controllers/notify"
	"github.com/coredog/coredog/controllers/upload"
	"github.com/coredog/coredog/internal/scheme"
	"github.com/coredog/coredog/internal/storage"
)

// Defaults of the manager's flags.
const (
	DefaultNamespace           = "coredog-system"
	DefaultAgentServiceAccount = "coredog-agent"
	LeaderElectionID           = "coredog-controller.coredog.io"
)

// Leader election and events; CoreDumps are read and written in the controller's namespace only.
// +kubebuilder:rbac:groups=coordination.k8s.io,namespace=coredog-system,resources=leases,verbs=get;create;update
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch

// The metrics endpoint authenticates its callers with TokenReviews and
// authorizes them with SubjectAccessReviews (get on the /metrics URL).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// Options are the manager's settings, shared by cmd/manager and the tests.
type Options struct {
	// Namespace the controller works in: agents, Secrets and CoreDumps live there.
	Namespace string
	// AgentImage is the agent image when a policy names none.
	AgentImage string
	// AgentServiceAccount the agents run as.
	AgentServiceAccount string
	// MetricsBindAddress ("0" turns metrics off) and HealthProbeBindAddress.
	MetricsBindAddress string
	// InsecureMetrics serves metrics over plain HTTP to anyone who connects,
	// for tests on loopback; the default is HTTPS with every caller
	// authenticated and authorized by the API server.
	InsecureMetrics        bool
	HealthProbeBindAddress string
	// LeaderElection makes only one replica reconcile.
	LeaderElection bool
	// MaxConcurrentUploads bounds parallel uploads.
	MaxConcurrentUploads int
	// MaxUploadAttempts is how many failed attempts make a dump Failed.
	MaxUploadAttempts int
	// UploadStallTimeout gives up an upload attempt that made no progress
	// for this long; 0 means upload.DefaultStallTimeout.
	UploadStallTimeout time.Duration
	// OpenStore opens storage; nil means storage.Open.
	OpenStore upload.OpenStoreFunc
	// ClusterName names the cluster in notifications; may be empty.
	ClusterName string
	// Notifications tunes notification delivery; zero values take the defaults.
	Notifications notify.Options
}

// Defaults for upload settings.
const (
	DefaultMaxConcurrentUploads = 4
	DefaultMaxUploadAttempts    = 15
)

// agentLeases selects the Leases agents write (internal/agentlease): they
// carry the policy label, which the leader-election Lease does not.
var agentLeases = func() labels.Selector {
	r, err := labels.NewRequirement(coredogv1.LabelPolicy, selection.Exists, nil)
	if err != nil {
		panic(err)
	}
	return labels.NewSelector().Add(*r)
}()

// NewScheme knows the built-in kinds and CoreDog's.
func NewScheme() *runtime.Scheme { return scheme.New() }

// ManagerOptions are the controller-runtime options for the manager. The
// cache watches DaemonSets and Secrets in the controller's namespace only, so
// the manager needs no cluster-wide rights to them.
func ManagerOptions(scheme *runtime.Scheme, o Options) ctrl.Options {
	return ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 MetricsServerOptions(o),
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElection,
		LeaderElectionID:        LeaderElectionID,
		LeaderElectionNamespace: o.Namespace,
		// The manager may exit as soon as it loses the lease: reconcilers are
		// idempotent and the next leader resumes.
		LeaderElectionReleaseOnCancel: true,
		Cache: cache.Options{
			ByObject: map[client.Object]cache.ByObject{
				&appsv1.DaemonSet{}:   {Namespaces: map[string]cache.Config{o.Namespace: {}}},
				&corev1.Secret{}:      {Namespaces: map[string]cache.Config{o.Namespace: {}}},
				&coredogv1.CoreDump{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}},
				// Agent Leases only (they carry the policy label), for
				// their serving certificates.
				&coordinationv1.Lease{}: {Namespaces: map[string]cache.Config{o.Namespace: {}}, Label: agentLeases},
			},
		},
	}
}

// MetricsServerOptions serve the metrics endpoint as the kubebuilder
// scaffold does: HTTPS (a self-signed certificate: the traffic is encrypted,
// the caller is who is checked) and every request authenticated with a
// TokenReview and authorized with a SubjectAccessReview for get on /metrics,
// which the metrics-reader ClusterRole grants. Dump counts by namespace,
// workload and signature say what crashes where; they are no one's business
// but the cluster's operators'.
func MetricsServerOptions(o Options) metricsserver.Options {
	if o.InsecureMetrics {
		return metricsserver.Options{BindAddress: o.MetricsBindAddress}
	}
	return metricsserver.Options{
		BindAddress:    o.MetricsBindAddress,
		SecureServing:  true,
		FilterProvider: filters.WithAuthenticationAndAuthorization,
	}
}

// Setup registers every reconciler and the health checks with a manager.
func Setup(mgr ctrl.Manager, o Options) error {
	if o.Namespace == "" {
		return fmt.Errorf("the controller's namespace is required")
	}
	if o.AgentImage == "" {
		return fmt.Errorf("the default agent image is required")
	}
	if o.AgentServiceAccount == "" {
		o.AgentServiceAccount = DefaultAgentServiceAccount
	}
	if o.MaxConcurrentUploads <= 0 {
		o.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	}
	if o.MaxUploadAttempts <= 0 {
		o.MaxUploadAttempts = DefaultMaxUploadAttempts
	}
	if o.OpenStore == nil {
		o.OpenStore = storage.Open
	}
	if err := setupIndexes(context.Background(), mgr); err != nil {
		return fmt.Errorf("setting up indexes: %w", err)
	}
	kube, err := kubernetes.NewForConfig(mgr.GetConfig())
	if err != nil {
		return fmt.Errorf("creating the client for pod logs: %w", err)
	}
	uploader := &upload.Uploader{
		Client: mgr.GetClient(), Leases: mgr.GetAPIReader(), Namespace: o.Namespace,
		OpenStore: o.OpenStore, StallTimeout: o.UploadStallTimeout,
		Logs: lastwords.KubeLogs{Client: kube}, Pods: mgr.GetAPIReader(),
	}
	notifier := notify.New(notify.Config{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Namespace: o.Namespace,
		Cluster:   o.ClusterName,
		Link:      uploader.SignedLink,
		Peers:     dumpsSharingBudget(mgr.GetClient(), o.Namespace),
		Options:   o.Notifications,
	})
	if err := mgr.Add(notifier); err != nil {
		return fmt.Errorf("adding the notifier: %w", err)
	}
	if err := (&CoreDumpPolicyReconciler{
		Client:              mgr.GetClient(),
		APIReader:           mgr.GetAPIReader(),
		Scheme:              mgr.GetScheme(),
		Namespace:           o.Namespace,
		AgentImage:          o.AgentImage,
		AgentServiceAccount: o.AgentServiceAccount,
		Notifier:            notifier,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the CoreDumpPolicy controller: %w", err)
	}
	if err := (&CoreDumpReconciler{
		Client:        mgr.GetClient(),
		APIReader:     mgr.GetAPIReader(),
		Scheme:        mgr.GetScheme(),
		Recorder:      mgr.GetEventRecorder("coredog-controller"),
		Namespace:     o.Namespace,
		MaxAttempts:   int32(o.MaxUploadAttempts),
		MaxConcurrent: o.MaxConcurrentUploads,
		Metrics:       managerMetrics(),
		Uploader:      uploader,
		Notifier:      notifier,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the CoreDump controller: %w", err)
	}
	if err := (&AgentCertReconciler{
		Client:    mgr.GetClient(),
		Namespace: o.Namespace,
	}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the agent certificate controller: %w", err)
	}
	watchState(mgr.GetCache(), o.Namespace)
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding health check: %w", err)
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return fmt.Errorf("adding ready check: %w", err)
	}
	return nil
}
