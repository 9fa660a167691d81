package upload

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/coredog/coredog/controllers/lastwords"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/pki"
	"github.com/coredog/coredog/internal/storage"
	"github.com/coredog/coredog/internal/wire"
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
	// Logs reads the crashed container's log, and Pods its pod (the API
	// server, not a cache: the status decides which run's log that is);
	// with Logs nil neither the log nor the pod is kept.
	Logs lastwords.LogSource
	Pods client.Reader

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
//
// Before the dump it fetches the backtraces the agent computed at capture
// (agentclient.FetchAnalysis, checked and bounded there), stores every
// thread of them in the metadata file, and returns what of them goes into
// status.analysis (the crashing thread; no modules). An agent that sends
// none, or a malformed one, makes that analysis Unavailable, never the
// upload fail.
func (u *Uploader) Upload(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, *coredogv1.CrashAnalysis, error) {
	timeout := u.StallTimeout
	if timeout <= 0 {
		timeout = DefaultStallTimeout
	}
	actx, stop := watchStall(ctx, timeout)
	defer stop()
	stored, analysis, err := u.upload(actx, cd, p)
	if err != nil {
		return nil, nil, stallError(actx, err)
	}
	return stored, analysis, nil
}

// analysisOf fetches a dump's analysis; what cannot be had is an
// Unavailable analysis that says why in the manager's words.
func analysisOf(ctx context.Context, ac *agentclient.Client, endpoint, node, name string) *wire.Analysis {
	a, err := ac.FetchAnalysis(ctx, endpoint, node, name)
	switch {
	case err == nil:
		return a
	case errors.Is(err, agentclient.ErrNotServed):
		return &wire.Analysis{Outcome: coredogv1.AnalysisUnavailable, Reason: "the agent did not analyse this dump"}
	case errors.Is(err, agentclient.ErrBadAnalysis):
		return &wire.Analysis{Outcome: coredogv1.AnalysisUnavailable, Reason: "the agent sent a malformed analysis"}
	}
	return &wire.Analysis{Outcome: coredogv1.AnalysisUnavailable, Reason: "the agent's analysis could not be fetched"}
}

func (u *Uploader) upload(ctx context.Context, cd *coredogv1.CoreDump, p *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, *coredogv1.CrashAnalysis, error) {
	target := cd.Status.Storage
	if target == nil || target.Key == "" {
		return nil, nil, errors.New("no storage key was decided")
	}
	loc, store, err := u.open(ctx, p)
	if err != nil {
		return nil, nil, err
	}
	defer store.Close()
	key, ok := loc.StoredKey(target.URL, target.Key)
	if !ok {
		return nil, nil, fmt.Errorf("the policy's storage moved from %s; the dump cannot be written where it was planned", target.URL)
	}
	// The key is this dump's alone (its name is the key's last segment),
	// and every write is conditional: whatever is there already is this
	// dump's own earlier attempt, which made it to the store but not into
	// the status, or is not this dump's and stays.
	docKey, logKey := storage.SidecarKey(key), storage.LogKey(key)
	for _, k := range []string{key, logKey, docKey} {
		if err := u.clearOwn(ctx, store, loc, k, docKey, cd); err != nil {
			return nil, nil, err
		}
	}
	// The log first: the dump may take minutes to stream, in which the
	// container may restart twice and the kubelet drop the crashed run's log.
	words := u.lastWords(ctx, cd)
	endpoint, err := u.endpoint(ctx, cd)
	if err != nil {
		return nil, nil, err
	}
	ac, err := u.agentClient(ctx, p.Name)
	if err != nil {
		return nil, nil, err
	}
	full := analysisOf(ctx, ac, endpoint, cd.Spec.NodeName, cd.Name)
	analysis := full.Status()
	// The agent must prove it is the dump's node's: the Lease's endpoint is
	// only where to look.
	stream, err := ac.Fetch(ctx, endpoint, cd.Spec.NodeName, cd.Name, target.Compression, cd.Spec.Size)
	if err != nil {
		return nil, nil, err
	}
	defer stream.Close()
	n, err := store.Write(ctx, key, stream, storage.WriteOptions{
		ContentType: encoding(target.Compression).ContentType,
		Metadata:    identity(cd),
		SizeHint:    maxEncodedSize(cd.Spec.Size),
		IfAbsent:    true,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("storing %s: %w", target.URL, err)
	}
	stored := target.DeepCopy()
	stored.StoredSize = n
	stored.SHA256 = stream.SHA256
	stored.UploadedAt = &metav1.Time{Time: u.now()}

	if words != nil && len(words.Log) > 0 {
		if _, err := store.Write(ctx, logKey, bytes.NewReader(words.Log), storage.WriteOptions{
			ContentType: storage.ContentTypeLog, Metadata: identity(cd), SizeHint: int64(len(words.Log)), IfAbsent: true,
		}); err != nil {
			return nil, nil, fmt.Errorf("storing the container's log next to %s: %w", target.URL, err)
		}
	}

	meta := cd.DeepCopy()
	meta.Status.Storage = stored
	meta.Status.Phase = coredogv1.PhaseUploaded
	meta.Status.Analysis = MergeAnalysis(meta.Status.Analysis, analysis)
	fields := map[string]any{
		"apiVersion": coredogv1.GroupVersion.String(), "kind": "CoreDump",
		"metadata": map[string]any{"name": cd.Name, "namespace": cd.Namespace, "uid": cd.UID, "labels": cd.Labels, "annotations": cd.Annotations},
		"spec":     storedSpec(meta.Spec, stream.CommandLine), "status": meta.Status,
		// Every thread: status.analysis has the crashing thread's alone.
		"analysis": full,
	}
	if words != nil {
		fields["lastWords"] = words.Info
		if words.Pod != nil {
			fields["pod"] = words.Pod
		}
	}
	doc, err := json.MarshalIndent(fields, "", "  ")
	if err == nil && len(doc) > maxSidecarBytes && fields["pod"] != nil {
		// A pod with huge annotations or many containers: the dump's
		// own record matters more.
		delete(fields, "pod")
		doc, err = json.MarshalIndent(fields, "", "  ")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("encoding metadata: %w", err)
	}
	if _, err := store.Write(ctx, docKey, bytes.NewReader(doc), storage.WriteOptions{
		ContentType: storage.ContentTypeJSON, Metadata: identity(cd), SizeHint: int64(len(doc)), IfAbsent: true,
	}); err != nil {
		return nil, nil, fmt.Errorf("storing metadata next to %s: %w", target.URL, err)
	}
	return stored, analysis, nil
}

// MergeAnalysis is cur with the outcome, reason, threads, crashing thread
// and frames of next; the modules stay cur's, whoever wrote them.
func MergeAnalysis(cur, next *coredogv1.CrashAnalysis) *coredogv1.CrashAnalysis {
	if next == nil {
		return cur
	}
	out := next.DeepCopy()
	if cur != nil {
		out.Modules = cur.Modules
	}
	return out
}

// lastWords gathers the crashed container's log and its pod, when the
// dump's pod is known; nil when it is not, or no log source is set.
func (u *Uploader) lastWords(ctx context.Context, cd *coredogv1.CoreDump) *lastwords.Record {
	ref := cd.Status.Pod
	if u.Logs == nil || u.Pods == nil || ref == nil || ref.Name == "" {
		return nil
	}
	t := lastwords.Target{
		Namespace: ref.Namespace, Pod: ref.Name, UID: ref.UID, Container: ref.Container,
		Crash: lastwords.Crash{ContainerID: cd.Spec.ContainerID, Signal: int(cd.Spec.Process.Signal)},
	}
	if at := cd.Spec.Process.DumpedAt; at != nil {
		t.Crash.DumpedAt = at.Time
	}
	rec := lastwords.Gather(ctx, u.Pods, u.Logs, t, u.now)
	if rec.Info.Run == lastwords.RunNone {
		ctrl.LoggerFrom(ctx).V(1).Info("No container log is kept with the dump", "why", rec.Info.Note)
	}
	return rec
}

// storedSpec is the spec the metadata file keeps: the CoreDump's, with the
// command line the agent sent with the download (already bounded and
// escaped by the agent client).
func storedSpec(spec coredogv1.CoreDumpSpec, commandLine string) coredogv1.StoredCoreDumpSpec {
	return coredogv1.StoredCoreDumpSpec{
		CoreDumpSpec: spec,
		Process:      coredogv1.StoredProcessInfo{ProcessInfo: spec.Process, CommandLine: commandLine},
	}
}

// ErrNotOwned is wrapped when an object at a dump's key is not that dump's:
// its recorded identity (the CoreDump's UID, or for objects written before
// UIDs were recorded its name and node) is another's, or none. Such an
// object is neither replaced nor deleted.
var ErrNotOwned = errors.New("the object stored at the key is not this dump's")

// identity is the metadata that ties a stored object to its CoreDump.
func identity(cd *coredogv1.CoreDump) map[string]string {
	return map[string]string{
		storage.MetadataCoreDump: cd.Name, storage.MetadataNode: cd.Spec.NodeName, storage.MetadataCoreDumpUID: string(cd.UID),
	}
}

// maxSidecarBytes bounds the read of a metadata document whose identity is
// checked; the manager writes a few KiB.
const maxSidecarBytes = 1 << 20

// owns says whether there is an object at key, and whether it is cd's.
// Objects carry their CoreDump's identity in their metadata; objects
// without it (metadata documents of earlier versions, file:// stores with
// metadata=skip) are judged by the metadata document doc (the sidecar of
// the dump's key, which is key itself when key is that sidecar), which
// holds the CoreDump's UID.
func (u *Uploader) owns(ctx context.Context, store storage.Store, key, doc string, cd *coredogv1.CoreDump) (exists, owned bool, err error) {
	info, err := store.Stat(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return false, false, nil
	}
	if err != nil {
		return false, false, err
	}
	md := info.Metadata
	if uid := md[storage.MetadataCoreDumpUID]; uid != "" {
		return true, uid == string(cd.UID), nil
	}
	if name := md[storage.MetadataCoreDump]; name != "" {
		return true, name == cd.Name && md[storage.MetadataNode] == cd.Spec.NodeName, nil
	}
	uid, err := sidecarUID(ctx, store, doc)
	if err != nil {
		return true, false, err
	}
	return true, uid != "" && uid == string(cd.UID), nil
}

// sidecarUID reads the CoreDump UID recorded in a metadata document; ""
// when there is none, or it is not one.
func sidecarUID(ctx context.Context, store storage.Store, key string) (string, error) {
	rc, err := store.Read(ctx, key)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	defer rc.Close()
	var doc struct {
		Metadata struct {
			UID string `json:"uid"`
		} `json:"metadata"`
	}
	if json.NewDecoder(io.LimitReader(rc, maxSidecarBytes)).Decode(&doc) != nil {
		return "", nil
	}
	return doc.Metadata.UID, nil
}

// clearOwn makes key free for cd's write: an object there that is cd's own
// (an earlier attempt that the store confirmed, but whose outcome never
// reached the status) is deleted, as the attempt is made again; anyone
// else's fails the attempt and stays.
func (u *Uploader) clearOwn(ctx context.Context, store storage.Store, loc *storage.Location, key, doc string, cd *coredogv1.CoreDump) error {
	exists, owned, err := u.owns(ctx, store, key, doc, cd)
	switch {
	case err != nil:
		return fmt.Errorf("checking %s: %w", loc.ObjectURL(key), err)
	case !exists:
		return nil
	case !owned:
		return fmt.Errorf("%w: %s is left as it is, and the dump is not stored", ErrNotOwned, loc.ObjectURL(key))
	}
	ctrl.LoggerFrom(ctx).Info("Replacing what an earlier attempt stored", "object", loc.ObjectURL(key))
	return store.Delete(ctx, key)
}

// DeleteStored removes a dump's stored objects, if any, and only those that
// are its own: an object at its key that another CoreDump wrote (or that
// records no identity) stays, and the error wraps ErrNotOwned.
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
	// Both are judged before either goes: the dump's object may be judged
	// by the document beside it.
	doc := storage.SidecarKey(key)
	var mine []string
	var left []error
	for _, k := range []string{key, storage.LogKey(key), doc} {
		exists, owned, err := u.owns(ctx, store, k, doc, cd)
		switch {
		case err != nil:
			return fmt.Errorf("checking %s: %w", loc.ObjectURL(k), err)
		case exists && owned:
			mine = append(mine, k)
		case exists:
			left = append(left, fmt.Errorf("%w: %s is left as it is", ErrNotOwned, loc.ObjectURL(k)))
		}
	}
	for _, k := range mine {
		if err := store.Delete(ctx, k); err != nil {
			return fmt.Errorf("deleting %s: %w", loc.ObjectURL(k), err)
		}
	}
	return errors.Join(left...)
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
