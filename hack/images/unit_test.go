package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestLayerTarRefuses(t *testing.T) {
	tests := []struct {
		name  string
		files []file
		want  string
	}{
		{"setuid", []file{regular("/x", 0o4755, nil)}, "mode 4755"},
		{"setgid", []file{dir("/d", 0o2755, 0, 0)}, "mode 2755"},
		{"relative", []file{regular("x", 0o644, nil)}, "not a clean absolute path"},
		{"dot-dot", []file{regular("/a/../x", 0o644, nil)}, "not a clean absolute path"},
		{"root", []file{dir("/", 0o755, 0, 0)}, "not a clean absolute path"},
		{"no parent", []file{regular("/etc/passwd", 0o644, nil)}, "its directory /etc is not in the layer"},
		{"parent is a file", []file{regular("/etc", 0o644, nil), regular("/etc/passwd", 0o644, nil)}, "its directory /etc is not in the layer"},
		{"twice", []file{regular("/x", 0o644, nil), regular("/x", 0o600, nil)}, "twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := layerTar(tt.files, time.Unix(0, 0))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("layerTar: %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestSplitName(t *testing.T) {
	tests := []struct {
		in, repo, tag string
		ok            bool
	}{
		{"ghcr.io/coredog/coredog:dev", "ghcr.io/coredog/coredog", "dev", true},
		{"registry.k8s.io/pause:3.10", "registry.k8s.io/pause", "3.10", true},
		{"localhost:5000/coredog:v1", "localhost:5000/coredog", "v1", true},
		{"coredog.test/crasher:v1", "coredog.test/crasher", "v1", true},
		{"coredog:dev", "", "", false},                 // no registry: containerd would not match docker.io/library/...
		{"library/coredog:dev", "", "", false},         // the same
		{"ghcr.io/coredog/coredog", "", "", false},     // no tag
		{"ghcr.io/coredog/coredog:d:v", "", "", false}, // not a name
		{"ghcr.io/coredog/coredog@sha256:0", "", "", false},
	}
	for _, tt := range tests {
		repo, tag, err := splitName(tt.in)
		if (err == nil) != tt.ok || repo != tt.repo || tag != tt.tag {
			t.Errorf("splitName(%q) = %q, %q, %v", tt.in, repo, tag, err)
		}
	}
}

func TestParsePlatforms(t *testing.T) {
	tests := []struct {
		in   string
		want string
	}{
		{"linux/amd64,linux/arm64", "linux/amd64 linux/arm64/v8"},
		{"linux/arm64", "linux/arm64/v8"},
		{"linux/amd64,linux/amd64", "error"},
		{"linux/386", "error"},
		{"darwin/arm64", "error"},
		{"amd64", "error"},
		{"", "error"},
	}
	for _, tt := range tests {
		ps, err := parsePlatforms(tt.in)
		got := "error"
		if err == nil {
			var s []string
			for _, p := range ps {
				s = append(s, platformString(p))
			}
			got = strings.Join(s, " ")
		}
		if got != tt.want {
			t.Errorf("parsePlatforms(%q) = %s (%v), want %s", tt.in, got, err, tt.want)
		}
	}
}

// A dynamically linked program and one for another machine are refused.
func TestCheckStaticRefuses(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "x.c")
	if err := os.WriteFile(src, []byte("int main(void) { return 0; }\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dyn := filepath.Join(dir, "dyn")
	if out, err := exec.Command("gcc", "-o", dyn, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	if err := checkStatic(dyn, hostArch()); !errors.Is(err, errNotStatic) {
		t.Errorf("checkStatic(dynamic) = %v, want errNotStatic", err)
	}
	static := filepath.Join(dir, "static")
	if out, err := exec.Command("gcc", "-static", "-o", static, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc -static: %v\n%s", err, out)
	}
	if err := checkStatic(static, hostArch()); err != nil {
		t.Errorf("checkStatic(static) = %v", err)
	}
	other := map[string]string{"amd64": "arm64", "arm64": "amd64"}[hostArch()]
	if err := checkStatic(static, other); err == nil || !strings.Contains(err.Error(), "ELF machine") {
		t.Errorf("checkStatic(static, %s) = %v, want a machine mismatch", other, err)
	}
	if err := checkStatic(src, hostArch()); err == nil {
		t.Error("checkStatic(a C file) succeeded")
	}
}

// Packaging alone is deterministic: the same files and time give the same
// image digest and the same layout tar bytes, whatever the directories.
func TestPackagingIsReproducible(t *testing.T) {
	spec := func() imageSpec {
		return imageSpec{
			platform: platformFor("arm64"),
			layers: []layerSpec{
				{createdBy: "base", files: baseFiles()},
				{createdBy: "bin", files: []file{regular("/bin", 0o755, bytes.Repeat([]byte("x"), 1<<20))}},
			},
			config: v1.Config{User: "1:1", Entrypoint: []string{"/bin"}, ExposedPorts: exposed("1/tcp", "2/udp")},
		}
	}
	created := time.Unix(1234567890, 0)
	var tars [][]byte
	var digests []v1.Hash
	for range 2 {
		idx, err := buildIndex([]imageSpec{spec(), spec()}, created)
		if err != nil {
			t.Fatal(err)
		}
		d, err := idx.Digest()
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(t.TempDir(), "x.tar")
		if err := writeLayoutTar(dst, idx, "example.com/x:y", "y", created); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(dst)
		if err != nil {
			t.Fatal(err)
		}
		tars, digests = append(tars, b), append(digests, d)
	}
	if digests[0] != digests[1] || !bytes.Equal(tars[0], tars[1]) {
		t.Errorf("two packagings differ: %s %s, tar bytes equal: %v", digests[0], digests[1], bytes.Equal(tars[0], tars[1]))
	}
	// A different time is a different image: the time is really in it.
	idx, err := buildIndex([]imageSpec{spec(), spec()}, created.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := idx.Digest(); d == digests[0] {
		t.Error("the digest does not depend on the time")
	}
}
