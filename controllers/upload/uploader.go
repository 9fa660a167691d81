package upload

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentclient"
	"github.com/coredog/coredog/controllers/agentset"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/storage"
)

// OpenStoreFunc opens a store; tests may swap it.
type OpenStoreFunc func(ctx context.Context, loc *storage.Location, creds map[string][]byte) (storage.Store, error)

// Uploader moves one dump from its agent into storage, and deletes stored
// dumps. It keeps one agent client per policy CA.
type Uploader struct {
	Client client.Reader
	// Leases reads the agents' Leases, which say where each agent serves:
	// the API server itself (the manager's APIReader), not a cache. An
	// upload reads one Lease, while a cache would watch every renewal of
	// every agent, and its informer, started by the first read, made that
	// first upload wait for the whole namespace's Leases to be listed.
	Leases    client.Reader
	Namespace string
	OpenStore OpenStoreFunc
	// StallTimeout gives up an upload attempt that made no progress for
	// this long; 0 means DefaultStallTimeout.
	StallTimeout time.Duration
	Now          func() time.Time

	mu      sync.Mutex
	clients map[string]cachedClient
}

type cachedClient struct {
	fingerprint string
	client      *agentclient.Client
}

// timeLayout sorts and reads well in object keys.
const timeLayout = "20060102T150405Z"

// Key decides where a dump will be stored.
func (u *Uploader) Key(cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, error) {
	loc, err := storage.ParseURL(p.Spec.Storage.URL)
	if err != nil {
		return nil, err
	}
	kt, err := storage.ParseKeyTemplate(KeyTemplateOf(p))
	if err != nil {
		return nil, err
	}
	f := storage.KeyFields{
		Node: cd.Spec.NodeName, Executable: cd.Spec.Process.Executable, Signal: int(cd.Spec.Process.Signal),
		SignalName: cd.Spec.Process.SignalName, Signature: cd.Spec.Signature, Name: cd.Name,
		Time: cd.CrashTime().UTC().Format(timeLayout),
	}
	if ref := cd.Status.Pod; ref != nil {
		f.Namespace, f.Pod, f.Container = ref.Namespace, ref.Name, ref.Container
		if ref.WorkloadKind != "" {
			f.Workload = ref.WorkloadKind + "-" + ref.WorkloadName
		}
	}
	key, err := kt.Render(f)
	if err != nil {
		return nil, err
	}
	compression := cmp.Or(p.Spec.Storage.Compression, coredogv1.DefaultCompression)
	key += encoding(compression).Ext
	return &coredogv1.StorageStatus{URL: loc.ObjectURL(key), Key: loc.Prefix + key, Compression: compression}, nil
}

// KeyTemplateOf is the key template a policy's dumps are stored with: its
// own, or the default. The earlier default, which the API server wrote into
// the policies it defaulted then, is taken as the current one: it let a
// forged dump's fields render another dump's key.
func KeyTemplateOf(p *coredogv1.CoreDumpPolicy) string {
	t := p.Spec.Storage.KeyTemplate
	if t == "" || t == storage.LegacyDefaultKeyTemplate {
		return coredogv1.DefaultKeyTemplate
	}
	return t
}

// ErrAgentLease is returned when the agent Lease of the dump's node cannot
// be used: held by another node, or without a valid endpoint.
var ErrAgentLease = errors.New("the agent Lease of the dump's node cannot be used")

// Upload streams the dump from its agent into the policy's storage, checks
// it, writes the metadata file next to it, and returns where it is. It
// returns only after the store confirmed both writes. An attempt that makes
// no progress for StallTimeout is given up with an error wrapping ErrStalled.
func (u *Uploader) Upload(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, error) {
	timeout := u.StallTimeout
	if timeout <= 0 {
		timeout = DefaultStallTimeout
	}
	actx, stop := watchStall(ctx, timeout)
	defer stop()
	stored, err := u.upload(actx, cd, p)
	return stored, stallError(actx, err)
}

func (u *Uploader) upload(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, error) {
	target := cd.Status.Storage
	if target == nil || target.Key == "" {
		return nil, errors.New("no storage key was decided")
	}
	loc, store, err := u.open(ctx, p)
	if err != nil {
		return nil, err
	}
	defer store.Close()
	key, ok := loc.StoredKey(target.URL, target.Key)
	if !ok {
		return nil, fmt.Errorf("the policy's storage moved from %s; the dump cannot be written where it was planned", target.URL)
	}
	endpoint, err := u.endpoint(ctx, cd)
	if err != nil {
		return nil, err
	}
	ac, err := u.agentClient(ctx, p.Name)
	if err != nil {
		return nil, err
	}
	stream, err := ac.Fetch(ctx, endpoint, cd.Name, target.Compression, cd.Spec.Size)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	n, err := store.Write(ctx, key, stream, storage.WriteOptions{
		ContentType: encoding(target.Compression).ContentType,
		Metadata:    map[string]string{storage.MetadataCoreDump: cd.Name, storage.MetadataNode: cd.Spec.NodeName},
		SizeHint:    maxEncodedSize(cd.Spec.Size),
	})
	if err != nil {
		return nil, fmt.Errorf("storing %s: %w", target.URL, err)
	}
	stored := target.DeepCopy()
	stored.StoredSize = n
	stored.SHA256 = stream.SHA256
	stored.UploadedAt = &metav1.Time{Time: u.now()}

	meta := cd.DeepCopy()
	meta.Status.Storage = stored
	meta.Status.Phase = coredogv1.PhaseUploaded
	doc, err := json.MarshalIndent(map[string]any{
		"apiVersion": coredogv1.GroupVersion.String(), "kind": "CoreDump",
		"metadata": map[string]any{"name": cd.Name, "namespace": cd.Namespace, "uid": cd.UID, "labels": cd.Labels, "annotations": cd.Annotations},
		"spec":     meta.Spec, "status": meta.Status,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding metadata: %w", err)
	}
	if _, err := store.Write(ctx, storage.SidecarKey(key), bytes.NewReader(doc), storage.WriteOptions{ContentType: storage.ContentTypeJSON, SizeHint: int64(len(doc))}); err != nil {
		return nil, fmt.Errorf("storing metadata next to %s: %w", target.URL, err)
	}
	return stored, nil
}

// DeleteStored removes a dump's stored objects, if any.
func (u *Uploader) DeleteStored(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) error {
	target := cd.Status.Storage
	if target == nil || target.Key == "" {
		return nil
	}
	if p == nil {
		return fmt.Errorf("CoreDumpPolicy %s is gone with its storage settings; %s stays", cd.Spec.PolicyName, target.URL)
	}
	loc, store, err := u.open(ctx, p)
	if err != nil {
		return err
	}
	defer store.Close()
	key, ok := loc.StoredKey(target.URL, target.Key)
	if !ok {
		return fmt.Errorf("the policy's storage moved; %s stays", target.URL)
	}
	if err := store.Delete(ctx, key); err != nil {
		return fmt.Errorf("deleting %s: %w", target.URL, err)
	}
	if err := store.Delete(ctx, storage.SidecarKey(key)); err != nil {
		return fmt.Errorf("deleting the metadata of %s: %w", target.URL, err)
	}
	return nil
}

// maxEncodedSize bounds what a raw dump of size bytes can grow to when
// encoded: zstd and gzip add a few bytes per block to data they cannot
// compress, far less than 1/256, plus headers.
func maxEncodedSize(size int64) int64 {
	if size <= 0 {
		return 0
	}
	return size + size/256 + 1<<20
}

// encoding is how a dump with compression c is stored; zstd, the
// default, for any other value.
func encoding(c coredogv1.Compression) storage.Encoding {
	if enc, ok := storage.EncodingOf(string(c)); ok {
		return enc
	}
	return storage.EncodingZstd
}

func (u *Uploader) open(ctx context.Context, p *coredogv1.CoreDumpPolicy) (*storage.Location, storage.Store, error) {
	loc, err := storage.ParseURL(p.Spec.Storage.URL)
	if err != nil {
		return nil, nil, err
	}
	var creds map[string][]byte
	if ref := p.Spec.Storage.SecretRef; ref != nil {
		var s corev1.Secret
		if err := u.Client.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: ref.Name}, &s); err != nil {
			return nil, nil, fmt.Errorf("reading storage Secret %s: %w", ref.Name, err)
		}
		creds = s.Data
	}
	// Every write reports its progress to the stall watch of the upload
	// attempt whose context it carries (see watchStall).
	store, err := reportingProgress(u.OpenStore)(ctx, loc, creds)
	if err != nil {
		return nil, nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
	}
	return loc, store, nil
}

// endpoint reads the agent's address from its Lease. The Lease must be held
// in the name of the dump's node: the agents' admission policy makes an
// agent hold its Lease in its own node's name, and a Lease name alone does
// not tie it to one node (node "b.c" may write "p.a.b.c", the Lease of
// policy "p" on node "a.b.c"; long node names are hashed). What the Lease
// says is an agent's word: a bad endpoint is logged, not quoted in status.
func (u *Uploader) endpoint(ctx context.Context, cd *coredogv1.CoreDump) (string, error) {
	var lease coordinationv1.Lease
	name := agentlease.Name(cd.Spec.PolicyName, cd.Spec.NodeName)
	if err := u.Leases.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: name}, &lease); err != nil {
		return "", fmt.Errorf("finding the agent of node %s (Lease %s): %w", cd.Spec.NodeName, name, err)
	}
	if h := lease.Spec.HolderIdentity; h == nil || *h != cd.Spec.NodeName {
		return "", fmt.Errorf("%w: Lease %s is not held by node %s", ErrAgentLease, name, cd.Spec.NodeName)
	}
	ep := lease.Annotations[agentlease.AnnotationEndpoint]
	if _, err := agentlease.ParseEndpoint(ep); err != nil {
		ctrl.LoggerFrom(ctx).Info("Agent Lease has no usable endpoint", "lease", name, "err", err.Error())
		return "", fmt.Errorf("%w: Lease %s has no usable endpoint", ErrAgentLease, name)
	}
	return ep, nil
}

// agentClient returns a client with a certificate from the policy's current CA.
func (u *Uploader) agentClient(ctx context.Context, policy string) (*agentclient.Client, error) {
	var s corev1.Secret
	if err := u.Client.Get(ctx, client.ObjectKey{Namespace: u.Namespace, Name: agentset.CASecretName(policy)}, &s); err != nil {
		return nil, fmt.Errorf("reading the CA of policy %s: %w", policy, err)
	}
	fp := pki.Fingerprint(s.Data[pki.CACertKey], s.Data[pki.CAKeyKey])
	u.mu.Lock()
	defer u.mu.Unlock()
	if c, ok := u.clients[policy]; ok && c.fingerprint == fp {
		return c.client, nil
	}
	ca, err := pki.ParseCA(s.Data[pki.CACertKey], s.Data[pki.CAKeyKey])
	if err != nil {
		return nil, fmt.Errorf("reading the CA of policy %s: %w", policy, err)
	}
	creds, err := agentclient.NewCredentials(policy, ca, u.now())
	if err != nil {
		return nil, err
	}
	c, err := agentclient.New(creds)
	if err != nil {
		return nil, err
	}
	if old, ok := u.clients[policy]; ok {
		old.client.Close()
	}
	if u.clients == nil {
		u.clients = map[string]cachedClient{}
	}
	u.clients[policy] = cachedClient{fingerprint: fp, client: c}
	return c, nil
}

func (u *Uploader) now() time.Time {
	if u.Now == nil {
		return time.Now()
	}
	return u.Now()
}

// SignedLink signs a download link for a stored dump with the policy's
// storage credentials (a notify.LinkFunc); stores that cannot sign (file://)
// give the stored location, which does not expire.
func (u *Uploader) SignedLink(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy, expiry time.Duration) (string, time.Time, error) {
	st := cd.Status.Storage
	if st == nil || st.Key == "" {
		return "", time.Time{}, errors.New("the dump is not stored")
	}
	loc, store, err := u.open(ctx, p)
	if err != nil {
		return "", time.Time{}, err
	}
	defer store.Close()
	key, ok := loc.StoredKey(st.URL, st.Key)
	if !ok {
		return "", time.Time{}, fmt.Errorf("the policy's storage moved; %s cannot be signed", st.URL)
	}
	expires := u.now().Add(expiry)
	link, err := store.SignedURL(ctx, key, expiry)
	if errors.Is(err, storage.ErrSignedURLUnsupported) {
		return st.URL, time.Time{}, nil
	}
	if err != nil {
		return "", time.Time{}, err
	}
	return link, expires, nil
}
