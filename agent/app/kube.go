package app

import (
	"context"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Resource names in the API paths the agent uses.
const (
	coreDumpsResource = "coredumps"
	leasesResource    = "leases"
)

// kubeClient is everything the agent asks of the API server: create, get,
// list and watch CoreDumps, and get, create and update its Lease, all in one
// namespace. It is client-go's REST client on the scheme the agent is given
// (NewScheme: two kinds), not controller-runtime's client, which comes with
// client-go's scheme of every built-in API group and a discovery-backed REST
// mapper: megabytes of binary and start-up heap on every node for kinds the
// agent never touches. Without a mapper the paths are fixed here, so no
// discovery request is made.
//
// The three REST clients share one HTTP client (one connection to the API
// server) but each has its own token bucket of the configuration's QPS and
// Burst, so that a burst of creates queues neither a relist of the
// CoreDumps nor the Lease's renewal.
type kubeClient struct {
	// dumps creates and reads CoreDumps; dumpList lists and watches them.
	dumps, dumpList *rest.RESTClient
	leases          *rest.RESTClient
	params          runtime.ParameterCodec
}

// newKubeClient builds the clients from cfg. CoreDumps travel as JSON (a
// custom resource has no protobuf encoding); Leases, a built-in kind, as
// protobuf unless cfg asks for a content type.
func newKubeClient(cfg *rest.Config, scheme *runtime.Scheme, log logr.Logger) (*kubeClient, error) {
	cfg = rest.CopyConfig(cfg)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	if cfg.WarningHandler == nil && cfg.WarningHandlerWithContext == nil {
		cfg.WarningHandlerWithContext = warningLogger{log: log}
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, err
	}
	codecs := serializer.WithoutConversionCodecFactory{CodecFactory: serializer.NewCodecFactory(scheme)}
	restClient := func(gv schema.GroupVersion, contentType string) (*rest.RESTClient, error) {
		c := rest.CopyConfig(cfg)
		c.GroupVersion = &gv
		c.APIPath = "/apis"
		c.NegotiatedSerializer = codecs
		if c.ContentType == "" {
			c.ContentType = contentType
		}
		return rest.RESTClientForConfigAndClient(c, httpClient)
	}
	k := &kubeClient{params: runtime.NewParameterCodec(scheme)}
	if k.dumps, err = restClient(coredogv1.GroupVersion, ""); err != nil {
		return nil, err
	}
	if k.dumpList, err = restClient(coredogv1.GroupVersion, ""); err != nil {
		return nil, err
	}
	if k.leases, err = restClient(coordinationv1.SchemeGroupVersion, runtime.ContentTypeProtobuf); err != nil {
		return nil, err
	}
	return k, nil
}

// warningLogger logs the API server's warnings (deprecations, unknown
// fields) through the agent's logger rather than klog's.
type warningLogger struct{ log logr.Logger }

func (w warningLogger) HandleWarningHeaderWithContext(_ context.Context, code int, _ string, message string) {
	if code != 299 || message == "" {
		return
	}
	w.log.Info("Warning from the API server", "message", message)
}

var _ rest.WarningHandlerWithContext = warningLogger{}

// createDump creates cd. The response is not decoded: the agent needs
// nothing from it.
func (k *kubeClient) createDump(ctx context.Context, cd *coredogv1.CoreDump) error {
	return k.dumps.Post().Namespace(cd.Namespace).Resource(coreDumpsResource).Body(cd).Do(ctx).Error()
}

func (k *kubeClient) getDump(ctx context.Context, namespace, name string) (*coredogv1.CoreDump, error) {
	cd := &coredogv1.CoreDump{}
	err := k.dumps.Get().Namespace(namespace).Resource(coreDumpsResource).Name(name).Do(ctx).Into(cd)
	return cd, err
}

func (k *kubeClient) listDumps(ctx context.Context, namespace string, opts metav1.ListOptions) (*coredogv1.CoreDumpList, error) {
	list := &coredogv1.CoreDumpList{}
	err := k.dumpList.Get().Namespace(namespace).Resource(coreDumpsResource).
		VersionedParams(&opts, k.params).Do(ctx).Into(list)
	return list, err
}

func (k *kubeClient) watchDumps(ctx context.Context, namespace string, opts metav1.ListOptions) (watch.Interface, error) {
	opts.Watch = true
	return k.dumpList.Get().Namespace(namespace).Resource(coreDumpsResource).
		VersionedParams(&opts, k.params).Watch(ctx)
}

func (k *kubeClient) getLease(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error) {
	lease := &coordinationv1.Lease{}
	err := k.leases.Get().Namespace(namespace).Resource(leasesResource).Name(name).Do(ctx).Into(lease)
	return lease, err
}

func (k *kubeClient) createLease(ctx context.Context, lease *coordinationv1.Lease) error {
	return k.leases.Post().Namespace(lease.Namespace).Resource(leasesResource).Body(lease).Do(ctx).Error()
}

// updateLease writes lease; a stale resourceVersion is a Conflict.
func (k *kubeClient) updateLease(ctx context.Context, lease *coordinationv1.Lease) error {
	return k.leases.Put().Namespace(lease.Namespace).Resource(leasesResource).Name(lease.Name).Body(lease).Do(ctx).Error()
}

// patchDump merge-patches the CoreDump name with patch (JSON). A
// resourceVersion in the patch makes it conditional: a Conflict when the
// object changed meanwhile.
func (k *kubeClient) patchDump(ctx context.Context, namespace, name string, patch []byte) error {
	return k.dumps.Patch(types.MergePatchType).Namespace(namespace).Resource(coreDumpsResource).Name(name).Body(patch).Do(ctx).Error()
}
