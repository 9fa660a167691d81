// Package v1alpha1 holds the coredog.io/v1alpha1 API: CoreDumpPolicy, which
// says where and how node agents capture core dumps and where they are stored,
// and CoreDump, one captured dump. It owns the schema (defaults, bounds and
// CEL validation) and the shared names (labels, annotations, condition types,
// reasons); it must not hold behaviour beyond small pure helpers.
//
// +kubebuilder:object:generate=true
// +groupName=coredog.io
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "coredog.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme. It is apimachinery's,
	// so that importing the API links nothing of controller-runtime.
	SchemeBuilder = runtime.NewSchemeBuilder(func(s *runtime.Scheme) error {
		s.AddKnownTypes(GroupVersion, knownTypes...)
		metav1.AddToGroupVersion(s, GroupVersion)
		return nil
	})

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

// knownTypes are the kinds of this group-version and their lists; each
// kind's file adds its own in init.
var knownTypes []runtime.Object
