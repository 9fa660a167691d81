package install

import (
	"bytes"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/yaml"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestKustomizeDefault(t *testing.T) {
	objs := parseManifests(t, "config/default", kustomize(t, repoPath("config", "default")))
	assertSameSet(t, "objects of config/default", []string{
		"Namespace coredog-system",
		"CustomResourceDefinition coredumppolicies.coredog.io",
		"CustomResourceDefinition coredumps.coredog.io",
		"ServiceAccount coredog-system/coredog-manager",
		"ServiceAccount coredog-system/coredog-agent",
		"ClusterRole coredog-manager",
		"ClusterRoleBinding coredog-manager",
		"ClusterRole coredog-agent-metrics-auth",
		"ClusterRoleBinding coredog-agent-metrics-auth",
		"ClusterRole coredog-metrics-reader",
		"Role coredog-system/coredog-manager",
		"RoleBinding coredog-system/coredog-manager",
		"Role coredog-system/coredog-agent",
		"RoleBinding coredog-system/coredog-agent",
		"Deployment coredog-system/coredog-manager",
		"Service coredog-system/coredog-manager-metrics",
		"ValidatingAdmissionPolicy coredog-agent",
		"ValidatingAdmissionPolicyBinding coredog-agent",
	}, inventory(objs))

	// Agent pods use hostPID and hostPath: a namespace held to the baseline
	// Pod Security level would refuse them.
	if ns := find[*corev1.Namespace](t, objs, defaultNamespace); ns.Labels["pod-security.kubernetes.io/enforce"] != "privileged" {
		t.Errorf("Namespace %s labels %v: want pod-security.kubernetes.io/enforce: privileged (agents use hostPID and hostPath)", ns.Name, ns.Labels)
	}

	dep := find[*appsv1.Deployment](t, objs, managerName)
	checkManagerDeployment(t, dep, managerDeploymentWant{
		namespace: defaultNamespace, image: configImage,
		serviceAccount: managerName, agentServiceAccount: agentName, replicas: 2, metrics: true,
	})
	checkMetricsService(t, objs, dep)
	checkRBAC(t, objs, defaultNamespace, managerName, agentName, "")

	// The CRDs are the generated ones, untouched by the kustomizations.
	for _, name := range []string{"coredumppolicies.coredog.io", "coredumps.coredog.io"} {
		got := find[*apiextensionsv1.CustomResourceDefinition](t, objs, name)
		raw, err := os.ReadFile(repoPath("config", "crd", "bases", "coredog.io_"+strings.TrimSuffix(name, ".coredog.io")+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		want := find[*apiextensionsv1.CustomResourceDefinition](t, parseManifests(t, name, raw), name)
		if !equality.Semantic.DeepEqual(got, want) {
			t.Errorf("CRD %s in config/default differs from config/crd/bases", name)
		}
	}
}

// Setting the image the kustomize way also sets --agent-image, so that agents
// run the manager's own image.
func TestKustomizeImageReachesAgentImage(t *testing.T) {
	tmp := t.TempDir()
	if err := os.CopyFS(filepath.Join(tmp, "config"), os.DirFS(repoPath("config"))); err != nil {
		t.Fatal(err)
	}
	k := filepath.Join(tmp, "config", "manager", "kustomization.yaml")
	raw, err := os.ReadFile(k)
	if err != nil {
		t.Fatal(err)
	}
	// What `kustomize edit set image ghcr.io/coredog/coredog=registry.example/dog:v9` writes.
	edited := strings.Replace(strings.Replace(string(raw),
		"newName: ghcr.io/coredog/coredog", "newName: registry.example/dog", 1),
		"newTag: dev", "newTag: v9", 1)
	if edited == string(raw) {
		t.Fatal("config/manager/kustomization.yaml has no images entry for ghcr.io/coredog/coredog with newTag dev")
	}
	if err := os.WriteFile(k, []byte(edited), 0o644); err != nil {
		t.Fatal(err)
	}
	objs := parseManifests(t, "config/default (image edited)", kustomize(t, filepath.Join(tmp, "config", "default")))
	dep := find[*appsv1.Deployment](t, objs, managerName)
	checkManagerDeployment(t, dep, managerDeploymentWant{
		namespace: defaultNamespace, image: "registry.example/dog:v9",
		serviceAccount: managerName, agentServiceAccount: agentName, replicas: 2, metrics: true,
	})
}

// The tests build kustomizations with sigs.k8s.io/kustomize/api as a library;
// users run `kubectl apply -k`, which embeds its own copy. Both must be the
// same release, or the tests could pass on output kubectl would not produce.
// (A test binary's build information lists no dependencies, so the tests'
// versions are read from go.mod.)
func TestKustomizeLibraryMatchesKubectl(t *testing.T) {
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run `make test`, or KUBEBUILDER_ASSETS=$(hack/envtest.sh) go test ./test/install/ (hack/envtest.sh builds kubectl and the control plane)")
	}
	kubectl, err := buildinfo.ReadFile(filepath.Join(assets, "kubectl"))
	if err != nil {
		t.Fatalf("reading the build information of kubectl in KUBEBUILDER_ASSETS: %v", err)
	}
	goMod, err := os.ReadFile(repoPath("go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range []string{"sigs.k8s.io/kustomize/api", "sigs.k8s.io/kustomize/kyaml"} {
		want, got := embeddedVersion(kubectl, mod), requiredVersion(goMod, mod)
		if want == "" || got == "" || want != got {
			t.Errorf("%s: kubectl %s embeds %q, go.mod requires %q: go get %s@%s", mod, kubectl.Main.Version, want, got, mod, want)
		}
	}

	// Same release and same options: the same bytes, in the same order.
	for _, dir := range []string{repoPath("config", "default"), repoPath("config", "samples")} {
		cmd := exec.Command(filepath.Join(assets, "kubectl"), "kustomize", dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		want, err := cmd.Output()
		if err != nil {
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
		}
		if got := kustomize(t, dir); !bytes.Equal(got, want) {
			t.Errorf("kustomize/api builds %s differently from `kubectl kustomize` (%d bytes, kubectl %d): check the krusty options in kustomize()", dir, len(got), len(want))
		}
	}
}

// embeddedVersion is the version of module path built into a binary.
func embeddedVersion(bi *debug.BuildInfo, path string) string {
	for _, d := range bi.Deps {
		if d.Path == path {
			if d.Replace != nil {
				return d.Replace.Version
			}
			return d.Version
		}
	}
	return ""
}

// requiredVersion is the version go.mod requires of module path, from a
// require line (`require path v1.2.3` or `path v1.2.3` inside a block).
func requiredVersion(goMod []byte, path string) string {
	for line := range strings.SplitSeq(string(goMod), "\n") {
		f := strings.Fields(strings.TrimPrefix(strings.TrimSpace(line), "require "))
		if len(f) >= 2 && f[0] == path {
			return f[1]
		}
	}
	return ""
}

func TestCRDKustomizationListsEveryCRD(t *testing.T) {
	files, err := filepath.Glob(repoPath("config", "crd", "bases", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		want = append(want, "bases/"+filepath.Base(f))
	}
	assertSameSet(t, "CRDs in config/crd/bases and resources of config/crd/kustomization.yaml", want, kustomizationResources(t, repoPath("config", "crd")))
}

func kustomizationResources(t *testing.T, dir string) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		Resources []string `json:"resources"`
	}
	if err := yaml.Unmarshal(raw, &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", dir, err)
	}
	return k.Resources
}

func TestSamples(t *testing.T) {
	dir := repoPath("config", "samples")
	wantFiles := []string{
		"coredog_v1alpha1_coredumppolicy.yaml", "s3-access-key.yaml", "s3-irsa.yaml",
		"gcs-workload-identity.yaml", "azure.yaml", "team-namespaces.yaml",
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			have = append(have, filepath.Base(f))
		}
	}
	assertSameSet(t, "sample files", wantFiles, have)
	assertSameSet(t, "sample files and resources of config/samples/kustomization.yaml", have, kustomizationResources(t, dir))

	bySample := map[string][]manifest{}
	for _, f := range wantFiles {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		bySample[f] = parseManifests(t, "config/samples/"+f, raw)
	}
	policy := func(file string) *coredogv1.CoreDumpPolicy {
		t.Helper()
		var ps []*coredogv1.CoreDumpPolicy
		for _, m := range bySample[file] {
			if p, ok := m.Typed.(*coredogv1.CoreDumpPolicy); ok {
				ps = append(ps, p)
			}
		}
		if len(ps) != 1 {
			t.Fatalf("%s: want one CoreDumpPolicy, got %d", file, len(ps))
		}
		return ps[0]
	}
	secretKeys := func(file, name string) []string {
		t.Helper()
		s := find[*corev1.Secret](t, bySample[file], name)
		if s.Namespace != defaultNamespace {
			t.Errorf("%s: Secret %s is in %q; storage Secrets live in the controller's namespace %s", file, name, s.Namespace, defaultNamespace)
		}
		var keys []string
		for k := range s.StringData {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return keys
	}

	if p := policy("coredog_v1alpha1_coredumppolicy.yaml"); p.Spec.Storage.URL != "file:///var/lib/coredog/store" || p.Spec.Storage.SecretRef != nil {
		t.Errorf("the default sample stores in %q (secretRef %v); the local demo expects file:///var/lib/coredog/store", p.Spec.Storage.URL, p.Spec.Storage.SecretRef)
	}
	if p := policy("s3-access-key.yaml"); !strings.HasPrefix(p.Spec.Storage.URL, "s3://") || p.Spec.Storage.SecretRef == nil {
		t.Errorf("s3-access-key: want an s3:// URL with a secretRef, got %+v", p.Spec.Storage)
	} else if keys := secretKeys("s3-access-key.yaml", p.Spec.Storage.SecretRef.Name); !slices.Equal(keys, []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}) {
		t.Errorf("s3-access-key Secret keys %v", keys)
	}
	if p := policy("s3-irsa.yaml"); !strings.HasPrefix(p.Spec.Storage.URL, "s3://") || p.Spec.Storage.SecretRef != nil {
		t.Errorf("s3-irsa: want an s3:// URL without secretRef, got %+v", p.Spec.Storage)
	}
	if p := policy("gcs-workload-identity.yaml"); !strings.HasPrefix(p.Spec.Storage.URL, "gs://") || p.Spec.Storage.SecretRef != nil {
		t.Errorf("gcs-workload-identity: want a gs:// URL without secretRef, got %+v", p.Spec.Storage)
	}
	if p := policy("azure.yaml"); !strings.HasPrefix(p.Spec.Storage.URL, "azblob://") || p.Spec.Storage.SecretRef == nil {
		t.Errorf("azure: want an azblob:// URL with a secretRef, got %+v", p.Spec.Storage)
	} else if keys := secretKeys("azure.yaml", p.Spec.Storage.SecretRef.Name); !slices.Equal(keys, []string{"AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY"}) {
		t.Errorf("azure Secret keys %v", keys)
	}
	if p := policy("team-namespaces.yaml"); p.Spec.Selector.NamespaceSelector == nil || p.Spec.Selector.NamespaceSelector.MatchLabels["team"] != "payments" {
		t.Errorf("team-namespaces: want selector.namespaceSelector matchLabels team: payments, got %+v", p.Spec.Selector)
	}

	// The kustomization builds the same objects.
	built := parseManifests(t, "config/samples", kustomize(t, dir))
	var want []string
	for _, f := range wantFiles {
		want = append(want, inventory(bySample[f])...)
	}
	assertSameSet(t, "objects of config/samples", want, inventory(built))
}
