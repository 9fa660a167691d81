// Package scheme builds the runtime scheme of the manager and the kubectl
// plugin (the agent has its own, narrower one in agent/app): the built-in
// kinds and CoreDog's. It holds nothing else.
package scheme

import (
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// New returns a scheme that knows the built-in kinds and CoreDog's.
func New() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(coredogv1.AddToScheme(s))
	return s
}
