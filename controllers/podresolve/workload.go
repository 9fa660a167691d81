package podresolve

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Workload names what owns a pod, following owner references: ReplicaSet →
// its Deployment, Job → its CronJob; StatefulSet, DaemonSet, Job, ReplicaSet
// without Deployment, ReplicationController as themselves; a pod without a
// controller → Kind "Pod", its own name.
type Workload struct{ Kind, Name string }

// String returns "Kind/Name", e.g. "Deployment/web".
func (w Workload) String() string {
	if w.Kind == "" && w.Name == "" {
		return ""
	}
	return w.Kind + "/" + w.Name
}

// WorkloadOf reads ReplicaSets and Jobs through r (the manager passes an
// uncached reader, so the controller need not watch every ReplicaSet in the
// cluster). A missing owner (deleted) → stop at what is known (e.g. Kind
// ReplicaSet with its name), not an error. Other errors are returned wrapped.
//
// Beyond the kinds above: any other controller of a pod is reported as
// itself (an operator's custom kind is the workload people know); the
// controller of a ReplicaSet or Job is reported whatever its kind (an Argo
// Rollout, a JobSet), since that is what people manage; a mirror pod, whose
// controller is its Node, is reported as the Pod itself; an owner found under
// the same name but another UID is a different object, so it counts as
// missing.
func WorkloadOf(ctx context.Context, r client.Reader, pod *corev1.Pod) (Workload, error) {
	if pod == nil {
		return Workload{}, errors.New("finding the workload of a nil pod")
	}
	ref := metav1.GetControllerOf(pod)
	if ref == nil || isKind(*ref, "", "Node") {
		return Workload{Kind: "Pod", Name: pod.Name}, nil
	}
	switch {
	case isKind(*ref, appsv1.GroupName, "ReplicaSet"):
		return controllerOf(ctx, r, pod.Namespace, *ref, &appsv1.ReplicaSet{})
	case isKind(*ref, batchv1.GroupName, "Job"):
		return controllerOf(ctx, r, pod.Namespace, *ref, &batchv1.Job{})
	}
	return Workload{Kind: ref.Kind, Name: ref.Name}, nil
}

// controllerOf reads the owner ref names into obj and returns the owner's own
// controller, or the owner itself when it has none or is gone.
func controllerOf(ctx context.Context, r client.Reader, namespace string, ref metav1.OwnerReference, obj client.Object) (Workload, error) {
	self := Workload{Kind: ref.Kind, Name: ref.Name}
	if err := r.Get(ctx, client.ObjectKey{Namespace: namespace, Name: ref.Name}, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return self, nil
		}
		return Workload{}, fmt.Errorf("reading %s %s/%s: %w", ref.Kind, namespace, ref.Name, err)
	}
	if ref.UID != "" && obj.GetUID() != ref.UID {
		return self, nil
	}
	if owner := metav1.GetControllerOf(obj); owner != nil {
		return Workload{Kind: owner.Kind, Name: owner.Name}, nil
	}
	return self, nil
}

// isKind compares an owner reference's group and kind; the version does not
// matter, and a kind of the same name in another API group is not the same.
func isKind(ref metav1.OwnerReference, group, kind string) bool {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	return err == nil && gv.Group == group && ref.Kind == kind
}
