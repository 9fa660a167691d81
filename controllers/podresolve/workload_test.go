package podresolve

import (
	"context"
	"errors"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
)

func controllerRef(apiVersion, kind, name, uid string) metav1.OwnerReference {
	return metav1.OwnerReference{APIVersion: apiVersion, Kind: kind, Name: name, UID: types.UID(uid), Controller: new(true)}
}

func owned(name string, refs ...metav1.OwnerReference) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name), OwnerReferences: refs}
}

func TestWorkloadOf(t *testing.T) {
	objects := []client.Object{
		&appsv1.ReplicaSet{ObjectMeta: owned("web-5d8c7", controllerRef("apps/v1", "Deployment", "web", "uid-web"))},
		&appsv1.ReplicaSet{ObjectMeta: owned("bare-rs")},
		&appsv1.ReplicaSet{ObjectMeta: owned("checkout-6f9", controllerRef("argoproj.io/v1alpha1", "Rollout", "checkout", "uid-checkout"))},
		&appsv1.ReplicaSet{ObjectMeta: owned("reused-rs", controllerRef("apps/v1", "Deployment", "reused", "uid-reused"))},
		&batchv1.Job{ObjectMeta: owned("backup-29000000", controllerRef("batch/v1", "CronJob", "backup", "uid-backup"))},
		&batchv1.Job{ObjectMeta: owned("migrate")},
	}
	cases := []struct {
		name string
		refs []metav1.OwnerReference
		want Workload
	}{
		{"Deployment through its ReplicaSet", []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "web-5d8c7", "uid-web-5d8c7")}, Workload{"Deployment", "web"}},
		{"ReplicaSet without a Deployment", []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "bare-rs", "uid-bare-rs")}, Workload{"ReplicaSet", "bare-rs"}},
		{"ReplicaSet owner missing", []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "gone-7c6", "uid-gone")}, Workload{"ReplicaSet", "gone-7c6"}},
		{"ReplicaSet of the same name but another UID counts as missing", []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "reused-rs", "uid-old")}, Workload{"ReplicaSet", "reused-rs"}},
		{"ReplicaSet controlled by another kind", []metav1.OwnerReference{controllerRef("apps/v1", "ReplicaSet", "checkout-6f9", "uid-checkout-6f9")}, Workload{"Rollout", "checkout"}},
		{"StatefulSet", []metav1.OwnerReference{controllerRef("apps/v1", "StatefulSet", "db", "uid-db")}, Workload{"StatefulSet", "db"}},
		{"DaemonSet", []metav1.OwnerReference{controllerRef("apps/v1", "DaemonSet", "node-agent", "uid-na")}, Workload{"DaemonSet", "node-agent"}},
		{"ReplicationController", []metav1.OwnerReference{controllerRef("v1", "ReplicationController", "legacy", "uid-legacy")}, Workload{"ReplicationController", "legacy"}},
		{"Job", []metav1.OwnerReference{controllerRef("batch/v1", "Job", "migrate", "uid-migrate")}, Workload{"Job", "migrate"}},
		{"CronJob through its Job", []metav1.OwnerReference{controllerRef("batch/v1", "Job", "backup-29000000", "uid-backup-29000000")}, Workload{"CronJob", "backup"}},
		{"Job owner missing", []metav1.OwnerReference{controllerRef("batch/v1", "Job", "gone-job", "uid-gone-job")}, Workload{"Job", "gone-job"}},
		{"bare pod", nil, Workload{"Pod", "the-pod"}},
		{"owner that is not the controller", []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d8c7", UID: "uid-web-5d8c7"}}, Workload{"Pod", "the-pod"}},
		{"mirror pod of a static pod", []metav1.OwnerReference{controllerRef("v1", "Node", "node-1", "uid-node")}, Workload{"Pod", "the-pod"}},
		{"custom controller", []metav1.OwnerReference{controllerRef("example.com/v1", "ReplicaSet", "web-5d8c7", "uid-x")}, Workload{"ReplicaSet", "web-5d8c7"}},
	}
	r := fake.NewClientBuilder().WithScheme(testScheme(t)).WithObjects(objects...).Build()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: owned("the-pod", tc.refs...)}
			got, err := WorkloadOf(context.Background(), r, p)
			if err != nil {
				t.Fatalf("WorkloadOf: %v", err)
			}
			if got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
}

func TestWorkloadOfErrors(t *testing.T) {
	boom := errors.New("boom")
	r := fake.NewClientBuilder().WithScheme(testScheme(t)).WithInterceptorFuncs(interceptor.Funcs{
		Get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object, ...client.GetOption) error {
			return boom
		},
	}).Build()
	cases := []struct {
		name string
		pod  *corev1.Pod
		is   error
	}{
		{"nil pod", nil, nil},
		{"reading the ReplicaSet fails", &corev1.Pod{ObjectMeta: owned("p", controllerRef("apps/v1", "ReplicaSet", "web-5d8c7", "uid-web-5d8c7"))}, boom},
		{"reading the Job fails", &corev1.Pod{ObjectMeta: owned("p", controllerRef("batch/v1", "Job", "migrate", "uid-migrate"))}, boom},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WorkloadOf(context.Background(), r, tc.pod)
			if err == nil {
				t.Fatal("no error")
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v does not wrap %v", err, tc.is)
			}
		})
	}
}

func TestWorkloadString(t *testing.T) {
	cases := []struct {
		in   Workload
		want string
	}{
		{Workload{"Deployment", "web"}, "Deployment/web"},
		{Workload{"Pod", "debug"}, "Pod/debug"},
		{Workload{}, ""},
	}
	for _, tc := range cases {
		if got := tc.in.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func testScheme(t *testing.T) *runtime.Scheme {
	t.Helper()
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}
