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
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of these types.
	GroupVersion = schema.GroupVersion{Group: "coredog.io", Version: "v1alpha1"}

	// SchemeBuilder registers the types with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this group-version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
