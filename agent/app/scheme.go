package app

import (
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// NewScheme returns the kinds the agent reads and writes: CoreDumps and its
// Lease. The built-in kinds that internal/scheme adds for the controller
// would cost every agent a few MiB of type tables for nothing.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(coredogv1.AddToScheme(s))
	utilruntime.Must(coordinationv1.AddToScheme(s))
	return s
}
