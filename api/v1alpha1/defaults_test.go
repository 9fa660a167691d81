package v1alpha1

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// TestDefaultsMatchCRD checks that each +kubebuilder:default marker, as
// controller-gen wrote it into the CRD, equals the Go constant the code uses
// in its place.
func TestDefaultsMatchCRD(t *testing.T) {
	schema := crdSchema(t, "coredog.io_coredumppolicies.yaml")
	spec := "spec."
	sink := spec + "notifications[]."
	for _, tc := range []struct {
		path string
		want any
	}{
		{spec + "hostPath", DefaultHostPath},
		{spec + "fileNamePattern", DefaultFileNamePattern},
		{spec + "corePattern", string(DefaultCorePattern)},
		{spec + "detection.pollInterval", DefaultPollInterval},
		{spec + "detection.settleTime", DefaultSettleTime},
		{spec + "storage.keyTemplate", DefaultKeyTemplate},
		{spec + "storage.compression", string(DefaultCompression)},
		{spec + "limits.maxNodeUsage", DefaultMaxNodeUsage},
		{spec + "limits.minNodeFree", DefaultMinNodeFree},
		{spec + "limits.rateLimit.count", DefaultRateLimitCount},
		{spec + "limits.rateLimit.window", DefaultRateLimitWindow},
		{spec + "limits.coreDumps.nodeBurst", DefaultNodeBurst},
		{spec + "limits.coreDumps.nodePerMinute", DefaultNodePerMinute},
		{spec + "limits.coreDumps.signatureBurst", DefaultSignatureBurst},
		{spec + "limits.coreDumps.signaturePerHour", DefaultSignaturePerHour},
		{spec + "retention.ttl", DefaultRetentionTTL},
		{spec + "retention.skippedTTL", DefaultSkippedTTL},
		{sink + "on", DefaultNotifyOn()},
		{sink + "linkExpiry", DefaultLinkExpiry},
		{sink + "secretRef.key", DefaultSinkURLKey},
		{sink + "signingSecretRef.key", DefaultSigningSecretKey},
	} {
		got, ok := defaultAt(schema, tc.path)
		if !ok {
			t.Errorf("%s: the CRD has no default", tc.path)
			continue
		}
		switch want := tc.want.(type) {
		case time.Duration:
			d, err := time.ParseDuration(fmt.Sprint(got))
			if err != nil || d != want {
				t.Errorf("%s: the CRD's default is %v, the Go constant %v", tc.path, got, want)
			}
		case []NotificationTrigger:
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s: the CRD's default is %v, the Go default %v", tc.path, got, want)
			}
		case int32:
			if n, ok := got.(float64); !ok || n != float64(want) {
				t.Errorf("%s: the CRD's default is %v, the Go constant %v", tc.path, got, want)
			}
		default:
			if got != want {
				t.Errorf("%s: the CRD's default is %q, the Go constant %q", tc.path, got, want)
			}
		}
	}
}

// crdSchema reads the openAPIV3Schema of a generated CRD's only version.
func crdSchema(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "config", "crd", "bases", file))
	if err != nil {
		t.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	if len(crd.Spec.Versions) != 1 {
		t.Fatalf("%s: want one version, got %d", file, len(crd.Spec.Versions))
	}
	return crd.Spec.Versions[0].Schema.OpenAPIV3Schema
}

// TestMaxDumpSizeMatchesCRD checks spec.size's maximum against MaxDumpSize.
func TestMaxDumpSizeMatchesCRD(t *testing.T) {
	node, ok := nodeAt(crdSchema(t, "coredog.io_coredumps.yaml"), "spec.size")
	if !ok {
		t.Fatal("the CRD has no spec.size")
	}
	if got, ok := node["maximum"].(float64); !ok || got != float64(MaxDumpSize) {
		t.Errorf("spec.size's maximum is %v, MaxDumpSize %d", node["maximum"], int64(MaxDumpSize))
	}
}

// defaultAt walks a dotted path of properties ("a[]" steps into a list's
// items) and returns the default found there.
func defaultAt(schema map[string]any, path string) (any, bool) {
	node, ok := nodeAt(schema, path)
	if !ok {
		return nil, false
	}
	v, ok := node["default"]
	return v, ok
}

// nodeAt walks a dotted path of properties ("a[]" steps into a list's
// items) and returns the schema found there.
func nodeAt(schema map[string]any, path string) (map[string]any, bool) {
	node := schema
	for step := range strings.SplitSeq(path, ".") {
		name, list := strings.CutSuffix(step, "[]")
		props, _ := node["properties"].(map[string]any)
		next, ok := props[name].(map[string]any)
		if !ok {
			return nil, false
		}
		if list {
			if next, ok = next["items"].(map[string]any); !ok {
				return nil, false
			}
		}
		node = next
	}
	return node, true
}
