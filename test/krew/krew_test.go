package krew

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

var repoRoot = filepath.Join("..", "..")

// plugin is the part of krew's Plugin type (sigs.k8s.io/krew/pkg/index)
// the tests read.
type plugin struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []file `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// file is one entry of a platform's files: what krew copies out of the
// archive.
type file struct {
	From string `json:"from"`
	To   string `json:"to"`
}

const testVersion = "v0.0.1-test"

// release is what hack/krew.sh wrote for this machine's platform.
type release struct {
	dir      string // the archives and coredog.yaml
	manifest string // dir/coredog.yaml
	plugin   plugin
	archive  string // the one archive
}

// buildRelease runs hack/krew.sh for this machine's platform into a
// temporary directory; a failed build fails the test.
func buildRelease(t *testing.T) release {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "krew.sh"),
		"-platforms", runtime.GOOS+"/"+runtime.GOARCH, "-out", dir)
	cmd.Env = append(os.Environ(), "VERSION="+testVersion)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/krew.sh: %v\n%s", err, out)
	}
	r := release{dir: dir, manifest: filepath.Join(dir, "coredog.yaml")}
	b, err := os.ReadFile(r.manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &r.plugin); err != nil {
		t.Fatalf("coredog.yaml: %v\n%s", err, b)
	}
	archives, err := filepath.Glob(filepath.Join(dir, "*.tar.gz"))
	if err != nil || len(archives) != 1 {
		t.Fatalf("want one archive in %s, got %v (%v)", dir, archives, err)
	}
	r.archive = archives[0]
	return r
}

// krewTools builds validate-krew-manifest and kubectl-krew once
// (hack/krew-tools.sh caches them outside the repository) and returns their
// directory; a failed build fails the test.
func krewTools(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "hack", "krew-tools.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("hack/krew-tools.sh: %v\n%s", err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// TestKrewRelease builds the release once and checks it from the manifest's
// side, the validator's side and krew's.
func TestKrewRelease(t *testing.T) {
	r := buildRelease(t)
	tools := krewTools(t)

	t.Run("Manifest", func(t *testing.T) { checkManifest(t, r) })
	t.Run("Checksums", func(t *testing.T) { checkChecksums(t, r) })
	t.Run("ArchiveContents", func(t *testing.T) { checkArchiveContents(t, r) })
	t.Run("Validator", func(t *testing.T) { checkValidator(t, r, tools) })
	t.Run("ValidatorRejects", func(t *testing.T) { checkValidatorRejects(t, r, tools) })
	t.Run("KrewInstall", func(t *testing.T) { checkKrewInstall(t, r, tools) })
	t.Run("KrewRefusesTamperedArchive", func(t *testing.T) { checkKrewRefusesTampered(t, r, tools) })
}

func checkManifest(t *testing.T, r release) {
	p := r.plugin
	if p.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || p.Kind != "Plugin" {
		t.Errorf("apiVersion/kind = %s/%s", p.APIVersion, p.Kind)
	}
	if p.Metadata.Name != "coredog" {
		t.Errorf("metadata.name = %q, want coredog", p.Metadata.Name)
	}
	if p.Spec.Version != testVersion {
		t.Errorf("spec.version = %q, want %q (from VERSION)", p.Spec.Version, testVersion)
	}
	if p.Spec.Homepage == "" || p.Spec.ShortDescription == "" || p.Spec.Description == "" {
		t.Errorf("homepage, shortDescription and description must be set: %+v", p.Spec)
	}
	if len(p.Spec.Platforms) != 1 {
		t.Fatalf("want one platform, got %d", len(p.Spec.Platforms))
	}
	pl := p.Spec.Platforms[0]
	if want := map[string]string{"os": runtime.GOOS, "arch": runtime.GOARCH}; !maps.Equal(pl.Selector.MatchLabels, want) {
		t.Errorf("selector.matchLabels = %v, want %v", pl.Selector.MatchLabels, want)
	}
	wantURI := "https://github.com/coredog/coredog/releases/download/" + testVersion + "/" + filepath.Base(r.archive)
	if pl.URI != wantURI {
		t.Errorf("uri = %q, want %q", pl.URI, wantURI)
	}
	wantBin := "kubectl-coredog"
	if runtime.GOOS == "windows" {
		wantBin += ".exe"
	}
	if pl.Bin != wantBin {
		t.Errorf("bin = %q, want %q", pl.Bin, wantBin)
	}
}

// archiveFor is the local archive a platform's URI names.
func archiveFor(t *testing.T, r release, uri string) string {
	t.Helper()
	p := filepath.Join(r.dir, path.Base(uri))
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("uri %s names no archive in the output: %v", uri, err)
	}
	return p
}

func checkChecksums(t *testing.T, r release) {
	for _, pl := range r.plugin.Spec.Platforms {
		b, err := os.ReadFile(archiveFor(t, r, pl.URI))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != pl.SHA256 {
			t.Errorf("%s: sha256 %s, manifest says %s", path.Base(pl.URI), got, pl.SHA256)
		}
	}
}

// tarEntries lists a tar.gz's entries with their modes.
func tarEntries(t *testing.T, archive string) map[string]*tar.Header {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", archive, err)
	}
	tr := tar.NewReader(gz)
	entries := map[string]*tar.Header{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return entries
		}
		if err != nil {
			t.Fatalf("%s: %v", archive, err)
		}
		entries[h.Name] = h
	}
}

func checkArchiveContents(t *testing.T, r release) {
	for _, pl := range r.plugin.Spec.Platforms {
		entries := tarEntries(t, archiveFor(t, r, pl.URI))
		bin, ok := entries[pl.Bin]
		if !ok {
			t.Fatalf("archive has no %q (bin); it has %v", pl.Bin, keys(entries))
		}
		if bin.Typeflag != tar.TypeReg || bin.Mode&0o111 == 0 || bin.Size == 0 {
			t.Errorf("bin %q: type %c mode %o size %d, want a non-empty executable file", pl.Bin, bin.Typeflag, bin.Mode, bin.Size)
		}
		for _, f := range pl.Files {
			if _, ok := entries[f.From]; !ok {
				t.Errorf("files[].from %q is not in the archive (it has %v)", f.From, keys(entries))
			}
		}
		if !slices.ContainsFunc(pl.Files, func(f file) bool { return f.From == pl.Bin }) {
			t.Errorf("files does not copy bin %q: %+v", pl.Bin, pl.Files)
		}
	}
}

func keys(m map[string]*tar.Header) []string {
	return slices.Sorted(maps.Keys(m))
}

// validate runs validate-krew-manifest on a manifest file. -skip-install:
// its install step runs `kubectl krew install --manifest` without
// --archive, which downloads the release URIs; KrewInstall does that step
// offline from the local archive.
func validate(tools, manifest string) ([]byte, error) {
	return exec.Command(filepath.Join(tools, "validate-krew-manifest"),
		"-manifest", manifest, "-skip-install").CombinedOutput()
}

func checkValidator(t *testing.T, r release, tools string) {
	out, err := validate(tools, r.manifest)
	if err != nil {
		t.Fatalf("validate-krew-manifest: %v\n%s", err, out)
	}
	for _, want := range []string{"structural validation OK", "all spec.platform[] items are used", "no overlapping spec.platform[].selector"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("validate-krew-manifest did not report %q:\n%s", want, out)
		}
	}
}

// checkValidatorRejects shows the validator is not a rubber stamp: the
// manifest with one thing broken at a time fails.
func checkValidatorRejects(t *testing.T, r release, tools string) {
	orig, err := os.ReadFile(r.manifest)
	if err != nil {
		t.Fatal(err)
	}
	sum := r.plugin.Spec.Platforms[0].SHA256
	for _, tc := range []struct {
		name, file, old, new string
		want                 string // in the validator's error
	}{
		{"file name is not metadata.name", "other.yaml", "", "", `plugin should be named "other"`},
		{"version without v", "coredog.yaml", "version: " + testVersion, "version: 0.0.1", "not starting with 'v'"},
		{"sha256 not hex", "coredog.yaml", "sha256: " + sum, "sha256: " + strings.Repeat("z", 64), "`sha256` value"},
		{"unknown os", "coredog.yaml", "os: " + runtime.GOOS, "os: plan9", "doesn't match any supported platforms"},
		{"no bin", "coredog.yaml", "bin: ", "binary: ", "`bin` has to be set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := orig
			if tc.old != "" {
				if !bytes.Contains(b, []byte(tc.old)) {
					t.Fatalf("manifest has no %q", tc.old)
				}
				b = bytes.Replace(b, []byte(tc.old), []byte(tc.new), 1)
			}
			p := filepath.Join(t.TempDir(), tc.file)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := validate(tools, p)
			if err == nil {
				t.Fatalf("validate-krew-manifest accepted it:\n%s", out)
			}
			if !bytes.Contains(out, []byte(tc.want)) {
				t.Errorf("validate-krew-manifest failed without mentioning %q:\n%s", tc.want, out)
			}
			t.Logf("%s", out)
		})
	}
}

// krewInstall runs `kubectl krew install --manifest --archive` into a fresh
// KREW_ROOT and returns that root.
func krewInstall(t *testing.T, tools, manifest, archive string) (string, []byte, error) {
	t.Helper()
	root := t.TempDir()
	cmd := exec.Command(filepath.Join(tools, "kubectl-krew"), "install",
		"--manifest="+manifest, "--archive="+archive)
	cmd.Env = append(os.Environ(), "KREW_ROOT="+root, "KREW_OS="+runtime.GOOS, "KREW_ARCH="+runtime.GOARCH)
	out, err := cmd.CombinedOutput()
	return root, out, err
}

func checkKrewInstall(t *testing.T, r release, tools string) {
	root, out, err := krewInstall(t, tools, r.manifest, r.archive)
	if err != nil {
		t.Fatalf("kubectl krew install: %v\n%s", err, out)
	}
	pl := r.plugin.Spec.Platforms[0]
	// krew links bin/kubectl-coredog to the installed bin; running it is
	// what `kubectl coredog` does.
	help, err := exec.Command(filepath.Join(root, "bin", pl.Bin), "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("installed %s --help: %v\n%s", pl.Bin, err, help)
	}
	if !bytes.Contains(help, []byte("kubectl coredog")) {
		t.Errorf("installed plugin's help does not name kubectl coredog:\n%s", help)
	}
	for _, f := range pl.Files {
		p := filepath.Join(root, "store", "coredog", testVersion, f.From)
		if _, err := os.Stat(p); err != nil {
			t.Errorf("krew did not install %s: %v", f.From, err)
		}
	}
}

func checkKrewRefusesTampered(t *testing.T, r release, tools string) {
	b, err := os.ReadFile(r.archive)
	if err != nil {
		t.Fatal(err)
	}
	b = slices.Clone(b)
	b[len(b)/2] ^= 0xff
	tampered := filepath.Join(t.TempDir(), filepath.Base(r.archive))
	if err := os.WriteFile(tampered, b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, out, err := krewInstall(t, tools, r.manifest, tampered)
	if err == nil {
		t.Fatalf("krew installed an archive whose sha256 is not the manifest's:\n%s", out)
	}
	if !bytes.Contains(out, []byte("checksum does not match")) {
		t.Errorf("krew refused it for another reason than the checksum:\n%s", out)
	}
}
