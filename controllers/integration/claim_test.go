package integration

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers"
)

// staleReader is a client whose reads of one CoreDump return a copy taken
// earlier, as the manager's cache does while its informer lags behind the
// writes; everything else, writes included, goes to the API server.
type staleReader struct {
	client.Client
	stale *coredogv1.CoreDump
}

func (s *staleReader) Get(ctx context.Context, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
	if cd, ok := obj.(*coredogv1.CoreDump); ok && key == client.ObjectKeyFromObject(s.stale) {
		s.stale.DeepCopyInto(cd)
		return nil
	}
	return s.Client.Get(ctx, key, obj, opts...)
}

// List answers the manager's indexed lists of CoreDumps (the rate limit's)
// with the whole namespace, which the API server can list without the
// manager's cache index.
func (s *staleReader) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*coredogv1.CoreDumpList); ok {
		o := (&client.ListOptions{}).ApplyOptions(opts)
		return s.Client.List(ctx, list, client.InNamespace(o.Namespace))
	}
	return s.Client.List(ctx, list, opts...)
}

// countingUploader stores nothing and counts the uploads it was asked for.
type countingUploader struct{ uploads atomic.Int32 }

func (u *countingUploader) Key(*coredogv1.CoreDump, *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, error) {
	return &coredogv1.StorageStatus{URL: "file:///store/k/core.zst", Key: "k/core.zst", Compression: coredogv1.CompressionZstd}, nil
}

func (u *countingUploader) Upload(_ context.Context, cd *coredogv1.CoreDump, _ *coredogv1.CoreDumpPolicy) (*coredogv1.StorageStatus, *coredogv1.CrashAnalysis, error) {
	u.uploads.Add(1)
	st := cd.Status.Storage.DeepCopy()
	st.StoredSize, st.SHA256, st.UploadedAt = 42, "00", &metav1.Time{Time: time.Now()}
	return st, nil, nil
}

func (u *countingUploader) DeleteStored(context.Context, *coredogv1.CoreDump, *coredogv1.CoreDumpPolicy) error {
	return nil
}

// TestStaleCacheNeverUploadsTwice drives the CoreDump reconciler by hand
// with a cache that lags: after an upload wrote Uploaded, the next
// reconciles still read the dump as it was before (Uploading, or Pending).
// This is how one dump was once uploaded twice under load: the watch event
// of the first attempt's own status write queued the dump again, and the
// next reconcile ran before the informer had seen Uploaded. An upload must
// start only after the API server confirmed the claim, so the stale
// reconciles upload nothing and write nothing.
func TestStaleCacheNeverUploadsTwice(t *testing.T) {
	g := NewWithT(t)
	ctx := context.Background()
	p := createPolicy(t, newPolicy("claims", "/var/lib/cores-claims"))

	// In a namespace the running manager does not watch, so that only the
	// reconciler of this test acts on it.
	cd := validCoreDump("claimed-once")
	cd.Spec.PolicyName = p.Name
	cd.Finalizers = []string{coredogv1.FinalizerCleanup}
	g.Expect(k8s.Create(ctx, cd)).To(Succeed())
	t.Cleanup(func() {
		var cur coredogv1.CoreDump
		if k8s.Get(context.Background(), client.ObjectKeyFromObject(cd), &cur) == nil {
			cur.Finalizers = nil
			_ = k8s.Update(context.Background(), &cur)
			_ = k8s.Delete(context.Background(), &cur)
		}
	})
	cd.Status.Phase = coredogv1.PhasePending
	cd.Status.Pod = &coredogv1.PodReference{ResolvedBy: coredogv1.ResolvedByUnresolved}
	g.Expect(k8s.Status().Update(ctx, cd)).To(Succeed())
	pending := cd.DeepCopy()

	reader := &staleReader{Client: k8s, stale: pending}
	up := &countingUploader{}
	r := &controllers.CoreDumpReconciler{
		Client: reader, APIReader: k8s, Scheme: k8s.Scheme(), Recorder: events.NewFakeRecorder(100),
		Namespace: apiTestNamespace, Uploader: up, MaxAttempts: 5,
	}
	req := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cd)}
	get := func() *coredogv1.CoreDump {
		var cur coredogv1.CoreDump
		g.Expect(k8s.Get(ctx, req.NamespacedName, &cur)).To(Succeed())
		return &cur
	}

	// Pending → Uploading, read fresh.
	_, err := r.Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	uploading := get()
	g.Expect(uploading.Status.Phase).To(Equal(coredogv1.PhaseUploading))

	// Uploading → Uploaded, read fresh: one upload.
	reader.stale = uploading.DeepCopy()
	_, err = r.Reconcile(ctx, req)
	g.Expect(err).NotTo(HaveOccurred())
	uploaded := get()
	g.Expect(uploaded.Status.Phase).To(Equal(coredogv1.PhaseUploaded), uploaded.Status.Message)
	g.Expect(uploaded.Status.Attempts).To(Equal(int32(1)))
	g.Expect(up.uploads.Load()).To(Equal(int32(1)))

	// The cache still has Uploading, then still Pending: neither reconcile
	// may upload, nor write its outdated decision over Uploaded.
	for _, stale := range []*coredogv1.CoreDump{uploading, pending} {
		reader.stale = stale.DeepCopy()
		res, err := r.Reconcile(ctx, req)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(res.RequeueAfter).To(BeNumerically(">", 0), "a stale read should bring the dump back")
		g.Expect(up.uploads.Load()).To(Equal(int32(1)), "reconciling a stale %s copy uploaded again", stale.Status.Phase)
		now := get()
		g.Expect(now.Status.Phase).To(Equal(coredogv1.PhaseUploaded), "a stale %s copy was written over Uploaded", stale.Status.Phase)
		g.Expect(now.ResourceVersion).To(Equal(uploaded.ResourceVersion), "a stale %s copy wrote the dump", stale.Status.Phase)
	}

	// Two reconciles that read the same current Uploading copy (two
	// managers that both think they lead): only the first claim holds.
	cd2 := validCoreDump("claimed-by-one")
	cd2.Spec.PolicyName = p.Name
	cd2.Finalizers = []string{coredogv1.FinalizerCleanup}
	g.Expect(k8s.Create(ctx, cd2)).To(Succeed())
	t.Cleanup(func() {
		var cur coredogv1.CoreDump
		if k8s.Get(context.Background(), client.ObjectKeyFromObject(cd2), &cur) == nil {
			cur.Finalizers = nil
			_ = k8s.Update(context.Background(), &cur)
			_ = k8s.Delete(context.Background(), &cur)
		}
	})
	cd2.Status.Phase = coredogv1.PhaseUploading
	cd2.Status.Pod = &coredogv1.PodReference{ResolvedBy: coredogv1.ResolvedByUnresolved}
	cd2.Status.Storage, _ = up.Key(cd2, p)
	g.Expect(k8s.Status().Update(ctx, cd2)).To(Succeed())
	reader.stale = cd2.DeepCopy()
	req2 := ctrl.Request{NamespacedName: client.ObjectKeyFromObject(cd2)}
	for range 2 {
		_, err := r.Reconcile(ctx, req2)
		g.Expect(err).NotTo(HaveOccurred())
	}
	g.Expect(up.uploads.Load()).To(Equal(int32(2)), "two reconciles of one read of the second dump uploaded it twice")
}
