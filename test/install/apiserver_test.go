package install

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestAPIServerAcceptsEverything has a real kube-apiserver (envtest) validate
// every object of every install path: config/default, config/samples and
// the chart with default values and with every option on. Objects are
// created with a server-side dry run and strict field validation, so schema,
// CEL rules and unknown fields are all checked, and nothing is stored.
func TestAPIServerAcceptsEverything(t *testing.T) {
	sets := map[string][]manifest{
		"config/default":         parseManifests(t, "config/default", kustomize(t, repoPath("config", "default"))),
		"config/samples":         parseManifests(t, "config/samples", kustomize(t, repoPath("config", "samples"))),
		"chart (default values)": mustRender(t, chartRelease, defaultNamespace, nil).Objects,
		"chart (all options on)": mustRender(t, chartRelease, "platform-coredog", values(t, allOptionsOn)).Objects,
	}
	if t.Failed() {
		t.FailNow()
	}

	_, c := startEnvtest(t,
		repoPath("config", "crd", "bases"),
		filepath.Join("testdata", "crds"), // the ServiceMonitor subset
	)
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()

	// Namespaced objects need their namespace to exist: create those for real
	// (a dry-run Namespace would not hold anything).
	namespaces := map[string]bool{}
	for _, objs := range sets {
		for _, m := range objs {
			if m.Obj.GetKind() == "Namespace" {
				namespaces[m.Obj.GetName()] = true
			} else if ns := m.Obj.GetNamespace(); ns != "" {
				namespaces[ns] = true
			}
		}
	}
	for ns := range namespaces {
		err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("creating namespace %s: %v", ns, err)
		}
	}

	for name, objs := range sets {
		t.Run(name, func(t *testing.T) {
			if len(objs) == 0 {
				t.Fatal("no objects")
			}
			for _, m := range objs {
				if err := dryRun(ctx, c, m.Obj.DeepCopy()); err != nil {
					t.Errorf("the API server rejects %s: %v", m, err)
				}
			}
		})
	}
}

// dryRun creates obj with a server-side dry run; objects that already exist
// (the CRDs envtest installed, the namespaces) are updated the same way.
func dryRun(ctx context.Context, c client.Client, obj *unstructured.Unstructured) error {
	err := c.Create(ctx, obj, client.DryRunAll, client.FieldValidation("Strict"))
	if !apierrors.IsAlreadyExists(err) {
		return err
	}
	existing := &unstructured.Unstructured{}
	existing.SetGroupVersionKind(obj.GroupVersionKind())
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), existing); err != nil {
		return errors.Join(errors.New("exists but cannot be read"), err)
	}
	obj.SetResourceVersion(existing.GetResourceVersion())
	if err := c.Update(ctx, obj, client.DryRunAll, client.FieldValidation("Strict")); err != nil {
		return errors.Join(errors.New("dry-run update"), err)
	}
	return nil
}
