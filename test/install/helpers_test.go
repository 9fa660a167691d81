package install

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Names shared by config/ and the chart (installed as release "coredog").
const (
	defaultNamespace = "coredog-system"
	managerName      = "coredog-manager"
	agentName        = "coredog-agent"
	metricsName      = "coredog-manager-metrics"
	scraperName      = "coredog-metrics-scraper"
	configImage      = "ghcr.io/coredog/coredog:dev"
)

// repoPath is a path relative to the repository root.
func repoPath(parts ...string) string {
	return filepath.Join(append([]string{"..", ".."}, parts...)...)
}

var (
	testScheme = func() *runtime.Scheme {
		s := runtime.NewScheme()
		for _, add := range []func(*runtime.Scheme) error{
			clientgoscheme.AddToScheme, coredogv1.AddToScheme, apiextensionsv1.AddToScheme,
			// The Prometheus Operator's own types: a ServiceMonitor, PodMonitor
			// or PrometheusRule field the chart misspells fails the strict decode.
			monitoringv1.AddToScheme,
		} {
			if err := add(s); err != nil {
				panic(err)
			}
		}
		return s
	}()
	// strictDecoder rejects unknown and duplicate fields.
	strictDecoder = serializer.NewCodecFactory(testScheme, serializer.EnableStrict).UniversalDeserializer()
)

// manifest is one object of a rendered or built set.
type manifest struct {
	// Source says where it came from, for messages.
	Source string
	// Obj is the object as the API server would receive it.
	Obj *unstructured.Unstructured
	// Typed is the object decoded strictly into its Go type.
	Typed any
}

func (m manifest) String() string {
	return fmt.Sprintf("%s %s (%s)", m.Obj.GetKind(), objectKey(m.Obj.GetNamespace(), m.Obj.GetName()), m.Source)
}

func objectKey(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

// parseManifests splits a YAML stream into objects and decodes each strictly
// into its Kubernetes type; any error fails the test.
func parseManifests(t *testing.T, source string, data []byte) []manifest {
	t.Helper()
	var out []manifest
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: reading YAML document %d: %v", source, i, err)
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Errorf("%s: document %d is not valid YAML: %v", source, i, err)
			continue
		}
		if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
			continue // empty or comments only
		}
		m, err := decodeStrict(source, js)
		if err != nil {
			t.Errorf("%s: document %d: %v", source, i, err)
			continue
		}
		out = append(out, m)
	}
	return out
}

func decodeStrict(source string, js []byte) (manifest, error) {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		return manifest{}, fmt.Errorf("not a Kubernetes object: %w", err)
	}
	m := manifest{Source: source, Obj: u}
	gvk := u.GroupVersionKind()
	switch {
	case testScheme.Recognizes(gvk):
		obj, _, err := strictDecoder.Decode(js, nil, nil)
		if err != nil {
			return m, fmt.Errorf("%s %s does not decode strictly: %w", gvk.Kind, u.GetName(), err)
		}
		m.Typed = obj
	default:
		return m, fmt.Errorf("unexpected kind %s", gvk)
	}
	return m, nil
}

// find returns the one object of type T with that name, failing the test otherwise.
func find[T any](t *testing.T, objs []manifest, name string) T {
	t.Helper()
	var found []T
	for _, m := range objs {
		if v, ok := m.Typed.(T); ok && m.Obj.GetName() == name {
			found = append(found, v)
		}
	}
	if len(found) != 1 {
		var zero T
		t.Fatalf("want exactly one %T named %q, found %d", zero, name, len(found))
		return zero
	}
	return found[0]
}

// inventory lists "Kind namespace/name" of every object, for exact comparisons.
func inventory(objs []manifest) []string {
	out := make([]string, 0, len(objs))
	for _, m := range objs {
		out = append(out, m.Obj.GetKind()+" "+objectKey(m.Obj.GetNamespace(), m.Obj.GetName()))
	}
	return out
}

// kustomize builds a kustomization directory with sigs.k8s.io/kustomize/api,
// the library behind `kubectl kustomize` and `kubectl apply -k` (go.mod pins
// the version kubectl v1.37 embeds: api v0.21.1, kustomize v5.8.1), with the
// options kubectl uses when given no flags: no plugins, load restrictor
// rootOnly, and an unspecified reorder, which lets the kustomization's
// sortOptions or else kustomize's legacy order (Namespaces and CRDs first)
// decide. The output is the same bytes as `kubectl kustomize dir`.
func kustomize(t *testing.T, dir string) []byte {
	t.Helper()
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	resMap, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := resMap.AsYaml()
	if err != nil {
		t.Fatalf("kustomize build %s: writing YAML: %v", dir, err)
	}
	return out
}

// diffSets reports what want has that got lacks and the reverse.
func diffSets(want, got []string) (missing, extra []string) {
	w, g := toSet(want), toSet(got)
	for k := range w {
		if !g[k] {
			missing = append(missing, k)
		}
	}
	for k := range g {
		if !w[k] {
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return missing, extra
}

func toSet(list []string) map[string]bool {
	s := make(map[string]bool, len(list))
	for _, v := range list {
		s[v] = true
	}
	return s
}

// assertSameSet fails with the differences when two sets differ.
func assertSameSet(t *testing.T, what string, want, got []string) {
	t.Helper()
	missing, extra := diffSets(want, got)
	if len(missing) == 0 && len(extra) == 0 {
		return
	}
	msg := what + " differ:"
	if len(missing) > 0 {
		msg += "\n  missing:    " + strings.Join(missing, "; ")
	}
	if len(extra) > 0 {
		msg += "\n  unexpected: " + strings.Join(extra, "; ")
	}
	t.Error(msg)
}

// startCoreDogEnvtest starts an API server with CoreDog's CRDs and returns
// its config, an admin client and a context that ends after two minutes or
// with the test.
func startCoreDogEnvtest(t *testing.T) (context.Context, *rest.Config, client.Client) {
	t.Helper()
	cfg, admin := startEnvtest(t, repoPath("config", "crd", "bases"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx, cfg, admin
}

// startEnvtest starts a real API server and etcd (envtest) with the CRDs in
// crdDirs, stopped when the test ends, and returns its config and a client.
func startEnvtest(t *testing.T, crdDirs ...string) (*rest.Config, client.Client) {
	t.Helper()
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test`, or KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test ./test/install/ (hack/envtest.sh builds the control plane)")
	}
	env := &envtest.Environment{CRDDirectoryPaths: crdDirs, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stopping envtest: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c
}
