package main

import (
	"archive/tar"
	"bytes"
	"crypto/x509"
	"debug/elf"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// testEpoch is the fixed time of the test builds.
var testEpoch = time.Unix(1700000000, 0).UTC()

// buildWithCLI builds the images with the program itself, compiled without
// the race detector (compressing the binaries under it takes minutes), into
// out, and returns what it wrote (images.json).
func buildWithCLI(t *testing.T, prog, out string, platforms ...string) []result {
	t.Helper()
	start := time.Now()
	cmd := exec.Command(prog, "-src", "../..", "-out", out, "-image", "ghcr.io/coredog/coredog:test",
		"-platforms", strings.Join(platforms, ","), "-only", "coredog,pause,crasher")
	cmd.Env = append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", testEpoch.Unix()))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.Bytes())
	}
	t.Logf("%s in %s:\n%s%s", strings.Join(platforms, ","), time.Since(start), stderr.Bytes(), stdout)
	var listed []result
	b, err := os.ReadFile(filepath.Join(out, "images.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &listed); err != nil {
		t.Fatal(err)
	}
	for _, r := range listed {
		if st, err := os.Stat(filepath.Join(out, r.File)); err != nil || st.Size() != r.Size {
			t.Errorf("images.json lists %+v; the file: %v", r, err)
		}
		if !strings.Contains(string(stdout), r.Digest) {
			t.Errorf("%s: the program did not print %s", r.File, r.Digest)
		}
	}
	return listed
}

// entry is a file of an image's filesystem, as its layers hold it.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// builtImage is one platform's image read back from a layout tar.
type builtImage struct {
	platform v1.Platform
	digest   v1.Hash
	config   *v1.ConfigFile
	files    map[string]entry
}

// readLayoutTar unpacks an OCI layout tar, checks index.json's one
// descriptor and its annotations, and returns the images it holds.
func readLayoutTar(t *testing.T, path, wantName, wantTag string) (v1.Descriptor, []builtImage) {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	eachTarEntry(t, f, func(hdr *tar.Header, r io.Reader) {
		if !hdr.ModTime.Equal(testEpoch) || hdr.Uid != 0 || hdr.Gid != 0 {
			t.Errorf("%s: %s %d:%d in the layout tar, want %s 0:0", hdr.Name, hdr.ModTime, hdr.Uid, hdr.Gid, testEpoch)
		}
		name := filepath.Join(dir, filepath.FromSlash(hdr.Name))
		if !strings.HasPrefix(name, dir+string(filepath.Separator)) {
			t.Fatalf("%q leaves the layout", hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(name, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: type %c in the layout tar", hdr.Name, hdr.Typeflag)
		}
	})
	var ociLayout struct{ ImageLayoutVersion string }
	if b, err := os.ReadFile(filepath.Join(dir, "oci-layout")); err != nil || json.Unmarshal(b, &ociLayout) != nil || ociLayout.ImageLayoutVersion != "1.0.0" {
		t.Errorf("oci-layout: %q, %v", b, err)
	}
	top, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index.json has %d descriptors, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	if got := desc.Annotations[annotationImageName]; got != wantName {
		t.Errorf("%s = %q, want %q", annotationImageName, got, wantName)
	}
	if got := desc.Annotations[annotationRefName]; got != wantTag {
		t.Errorf("%s = %q, want %q", annotationRefName, got, wantTag)
	}
	var images []builtImage
	switch desc.MediaType {
	case types.OCIImageIndex:
		idx, err := top.ImageIndex(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range m.Manifests {
			img, err := idx.Image(d.Digest)
			if err != nil {
				t.Fatal(err)
			}
			images = append(images, readImage(t, img, d))
		}
	case types.OCIManifestSchema1:
		img, err := top.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, readImage(t, img, desc))
	default:
		t.Fatalf("index.json's descriptor is a %s", desc.MediaType)
	}
	return desc, images
}

func readImage(t *testing.T, img v1.Image, desc v1.Descriptor) builtImage {
	t.Helper()
	if desc.Platform == nil {
		t.Fatalf("%s: no platform in its descriptor", desc.Digest)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("%s: manifest media type %s", desc.Digest, mt)
	}
	if !cf.Created.Equal(testEpoch) {
		t.Errorf("%s: created %s, want %s", desc.Digest, cf.Created, testEpoch)
	}
	if got := cf.Platform(); !got.Equals(*desc.Platform) {
		t.Errorf("config's platform %s, descriptor's %s", platformString(*got), platformString(*desc.Platform))
	}
	files := map[string]entry{}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.History) != len(layers) {
		t.Errorf("%d history entries for %d layers", len(cf.History), len(layers))
	}
	for _, l := range layers {
		if mt, _ := l.MediaType(); mt != types.OCILayer {
			t.Errorf("layer media type %s", mt)
		}
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		eachTarEntry(t, rc, func(hdr *tar.Header, r io.Reader) {
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			name := "/" + strings.TrimSuffix(hdr.Name, "/")
			if _, dup := files[name]; dup {
				t.Errorf("%s is in two layers", name)
			}
			files[name] = entry{hdr: hdr, data: b}
		})
		_ = rc.Close()
	}
	return builtImage{platform: *desc.Platform, digest: desc.Digest, config: cf, files: files}
}

// checkFiles fails unless the image's filesystem is want exactly (path and
// mode, owner root unless owners says otherwise), with every time the build's
// and no setuid or setgid bit anywhere.
func checkFiles(t *testing.T, bi builtImage, want map[string]int64, owners map[string]int) {
	t.Helper()
	if got := sortedKeys(bi.files); !slices.Equal(got, sortedKeys(want)) {
		t.Errorf("%s: files\n%q\nwant exactly\n%q", platformString(bi.platform), got, sortedKeys(want))
	}
	for name, e := range bi.files {
		if e.hdr.Mode&modeSetID != 0 {
			t.Errorf("%s: setuid or setgid (mode %o)", name, e.hdr.Mode)
		}
		if m, ok := want[name]; ok && e.hdr.Mode != m {
			t.Errorf("%s: mode %o, want %o", name, e.hdr.Mode, m)
		}
		if e.hdr.Uid != owners[name] || e.hdr.Gid != owners[name] || e.hdr.Uname != "" || e.hdr.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want %d:%d by number", name, e.hdr.Uid, e.hdr.Gid, e.hdr.Uname, e.hdr.Gname, owners[name], owners[name])
		}
		if !e.hdr.ModTime.Equal(testEpoch) {
			t.Errorf("%s: time %s, want %s", name, e.hdr.ModTime, testEpoch)
		}
		if len(e.hdr.PAXRecords) != 0 || len(e.hdr.Xattrs) != 0 { //nolint:staticcheck // Xattrs is what older writers used.
			t.Errorf("%s: extended records %v", name, e.hdr.PAXRecords)
		}
		if e.hdr.Typeflag != tar.TypeDir && e.hdr.Typeflag != tar.TypeReg {
			t.Errorf("%s: type %c", name, e.hdr.Typeflag)
		}
	}
}

// checkStaticELF fails unless b is a static executable for arch. It reads
// the ELF itself rather than through the builder's checkStatic.
func checkStaticELF(t *testing.T, name string, b []byte, arch string) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
	if f.Machine != want {
		t.Errorf("%s: machine %s, want %s for %s", name, f.Machine, want, arch)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s: %s program header: not static", name, p.Type)
		}
	}
}

// The full build: CoreDog's image for both platforms, the pause and crasher
// images, read back and checked against the Dockerfile; then a second build
// in other directories, whose digests must be the first's.
func TestImages(t *testing.T) {
	hostPlatform := "linux/" + runtime.GOARCH
	prog := filepath.Join(t.TempDir(), "images")
	if out, err := exec.Command("go", "build", "-o", prog, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	outA := t.TempDir()
	resA := buildWithCLI(t, prog, outA, "linux/amd64", "linux/arm64")
	byFile := map[string]result{}
	for _, r := range resA {
		byFile[r.File] = r
	}
	if got := slices.Sorted(maps.Keys(byFile)); !slices.Equal(got, []string{"coredog.tar", "crasher.tar", "pause.tar"}) {
		t.Fatalf("built %q", got)
	}

	t.Run("coredog agrees with the Dockerfile", func(t *testing.T) {
		r := byFile["coredog.tar"]
		if r.Name != "ghcr.io/coredog/coredog:test" || r.Repository != "ghcr.io/coredog/coredog" || r.Tag != "test" {
			t.Errorf("coredog.tar is %+v", r)
		}
		desc, images := readLayoutTar(t, filepath.Join(outA, "coredog.tar"), r.Name, r.Tag)
		if desc.Digest.String() != r.Digest {
			t.Errorf("index.json points at %s, the build said %s", desc.Digest, r.Digest)
		}
		df := parseDockerfile(t, "../../Dockerfile")
		if df.base != "gcr.io/distroless/static:nonroot" {
			t.Errorf("the Dockerfile's base is %s: hack/images copies distroless/static:nonroot's filesystem", df.base)
		}
		// The Dockerfile builds each COPY source the way goBuild does.
		wantBins := map[string]string{}
		for _, b := range coreDogBinaries {
			wantBins[b.dest] = b.pkg
		}
		gotBins := map[string]string{}
		for dest, src := range df.copies {
			gotBins[dest] = df.builds[src]
		}
		if !maps.Equal(gotBins, wantBins) {
			t.Errorf("the Dockerfile copies %v (built from %v), hack/images builds %v", df.copies, df.builds, wantBins)
		}
		for _, l := range df.buildLines {
			if !strings.Contains(l, "-trimpath") {
				t.Errorf("the Dockerfile's %q lacks -trimpath", l)
			}
		}
		var platforms []string
		for _, bi := range images {
			p := platformString(bi.platform)
			platforms = append(platforms, p)
			c := bi.config.Config
			if c.User != df.user {
				t.Errorf("%s: user %q, the Dockerfile's %q", p, c.User, df.user)
			}
			if !slices.Equal(c.Entrypoint, df.entrypoint) || c.Cmd != nil {
				t.Errorf("%s: entrypoint %q cmd %q, the Dockerfile's %q", p, c.Entrypoint, c.Cmd, df.entrypoint)
			}
			if got, want := sortedKeys(c.ExposedPorts), slices.Sorted(slices.Values(df.exposed)); !slices.Equal(got, want) {
				t.Errorf("%s: exposed %q, the Dockerfile's %q", p, got, want)
			}
			if !maps.Equal(c.Labels, df.labels) || len(df.labels) == 0 {
				t.Errorf("%s: labels %v, the Dockerfile's %v", p, c.Labels, df.labels)
			}
			want := map[string]int64{
				"/etc": 0o755, "/etc/passwd": 0o644, "/etc/group": 0o644, "/etc/nsswitch.conf": 0o644,
				"/etc/ssl": 0o755, "/etc/ssl/certs": 0o755, caBundlePath: 0o644,
				"/home": 0o755, nonrootHome: 0o700, "/tmp": 0o1777,
			}
			for dest := range df.copies {
				want[dest] = 0o755
			}
			checkFiles(t, bi, want, map[string]int{nonrootHome: nonrootUID})
			for dest := range df.copies {
				checkStaticELF(t, p+":"+dest, bi.files[dest].data, bi.platform.Architecture)
			}
			checkBase(t, bi, c.User)
		}
		if !slices.Equal(platforms, []string{"linux/amd64", "linux/arm64/v8"}) {
			t.Errorf("platforms %q", platforms)
		}
	})

	t.Run("pause", func(t *testing.T) {
		r := byFile["pause.tar"]
		_, images := readLayoutTar(t, filepath.Join(outA, "pause.tar"), PauseImage, "3.10")
		bi := images[0]
		if platformString(bi.platform) != platformString(platformFor(runtime.GOARCH)) || r.Platforms[0] != platformString(bi.platform) {
			t.Errorf("pause is for %s, built on %s", platformString(bi.platform), hostPlatform)
		}
		if c := bi.config.Config; c.User != pauseUser || !slices.Equal(c.Entrypoint, []string{"/pause"}) {
			t.Errorf("pause: user %q entrypoint %q", c.User, c.Entrypoint)
		}
		checkFiles(t, bi, map[string]int64{"/pause": 0o755}, nil)
		checkStaticELF(t, "/pause", bi.files["/pause"].data, runtime.GOARCH)
		out, err := exec.Command(writeExecutable(t, bi.files["/pause"].data), "-v").CombinedOutput()
		if err != nil || string(out) != "pause.c "+pauseVersion+"\n" {
			t.Errorf("pause -v: %q, %v", out, err)
		}
	})

	t.Run("crasher", func(t *testing.T) {
		_, images := readLayoutTar(t, filepath.Join(outA, "crasher.tar"), CrasherImage, "v1")
		bi := images[0]
		if c := bi.config.Config; c.User != coreDogUser || !slices.Equal(c.Entrypoint, []string{"/crasher"}) || c.WorkingDir != "/tmp" {
			t.Errorf("crasher: user %q entrypoint %q workdir %q", c.User, c.Entrypoint, c.WorkingDir)
		}
		checkFiles(t, bi, map[string]int64{"/crasher": 0o755, "/tmp": 0o1777}, nil)
		checkStaticELF(t, "/crasher", bi.files["/crasher"].data, runtime.GOARCH)
		checkCrasher(t, writeExecutable(t, bi.files["/crasher"].data))
	})

	t.Run("a second build has the same digests", func(t *testing.T) {
		// The second build is for the build host's platform alone, to keep
		// the test's time down: its image's manifest must be the same as
		// that platform's in the first build's index, and the pause and
		// crasher tars the same bytes.
		outB := t.TempDir()
		resB := buildWithCLI(t, prog, outB, hostPlatform)
		a, b := hostManifest(t, filepath.Join(outA, "coredog.tar")), hostManifest(t, filepath.Join(outB, "coredog.tar"))
		if a != b || a == (v1.Hash{}) {
			t.Errorf("%s manifest: first build %s, second %s", hostPlatform, a, b)
		}
		for _, r := range resB {
			if r.File == "coredog.tar" {
				continue
			}
			a, errA := os.ReadFile(filepath.Join(outA, r.File))
			b, errB := os.ReadFile(filepath.Join(outB, r.File))
			if errA != nil || errB != nil || !bytes.Equal(a, b) || byFile[r.File].Digest != r.Digest {
				t.Errorf("%s: the two builds differ (%s, %s; %v %v)", r.File, byFile[r.File].Digest, r.Digest, errA, errB)
			}
		}
	})
}

// hostManifest returns the digest of the build host's platform's manifest in
// an image index's layout tar, reading only index.json and the index.
func hostManifest(t *testing.T, path string) v1.Hash {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blobs := map[string][]byte{}
	eachTarEntry(t, f, func(hdr *tar.Header, r io.Reader) {
		if hdr.Size < 1<<20 { // index.json, the index, manifests and configs
			b, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			blobs[hdr.Name] = b
		}
	})
	var top, idx v1.IndexManifest
	if err := json.Unmarshal(blobs["index.json"], &top); err != nil || len(top.Manifests) != 1 {
		t.Fatalf("index.json: %v, %d descriptors", err, len(top.Manifests))
	}
	if err := json.Unmarshal(blobs["blobs/sha256/"+top.Manifests[0].Digest.Hex], &idx); err != nil {
		t.Fatalf("the image index: %v", err)
	}
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.Architecture == runtime.GOARCH {
			return d.Digest
		}
	}
	t.Fatalf("%s has no %s image", path, runtime.GOARCH)
	return v1.Hash{}
}

// checkBase checks the files that stand in for distroless's: the image's
// user is in /etc/passwd and /etc/group, and the CA bundle holds the roots.
func checkBase(t *testing.T, bi builtImage, user string) {
	t.Helper()
	uid, gid, _ := strings.Cut(user, ":")
	if !strings.Contains(string(bi.files["/etc/passwd"].data), "nonroot:x:"+uid+":"+gid+":nonroot:"+nonrootHome+":") {
		t.Errorf("/etc/passwd has no nonroot %s: %q", user, bi.files["/etc/passwd"].data)
	}
	if !strings.Contains(string(bi.files["/etc/group"].data), "nonroot:x:"+gid+":") {
		t.Errorf("/etc/group has no nonroot %s: %q", gid, bi.files["/etc/group"].data)
	}
	if !slices.Contains(bi.config.Config.Env, "SSL_CERT_FILE="+caBundlePath) {
		t.Errorf("env %q does not name the CA bundle", bi.config.Config.Env)
	}
	rest := bi.files[caBundlePath].data
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil || !c.IsCA {
			t.Errorf("CA bundle: certificate %d: CA %v, %v", n, c != nil && c.IsCA, err)
		}
		n++
	}
	if _, want := caBundle(); n != want || n < 100 || len(bytes.TrimSpace(rest)) != 0 {
		t.Errorf("CA bundle: %d certificates (want %d, more than 100), %d bytes left over", n, want, len(rest))
	}
}

func writeExecutable(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "prog")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// checkCrasher runs the crasher as the image would: it must write the file
// it is given, crash N children and then itself by SIGSEGV, and refuse a bad
// option with exit code 2.
func checkCrasher(t *testing.T, prog string) {
	t.Helper()
	dir := t.TempDir()
	written := filepath.Join(dir, "written")
	cmd := exec.Command(prog, "--fork=2", "--write="+written)
	cmd.Dir = dir
	cmd.Env = []string{"CRASHER_DELAY=0"}
	out, err := cmd.Output()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGSEGV {
		t.Errorf("crasher: %v (status %v), want death by SIGSEGV\n%s", err, ws, out)
	}
	if got := strings.Count(string(out), "ended (signal 11,"); got != 2 {
		t.Errorf("crasher --fork=2: %d children died of SIGSEGV, want 2\n%s", got, out)
	}
	if !strings.Contains(string(out), "crasher: RLIMIT_CORE ") {
		t.Errorf("crasher did not report its RLIMIT_CORE:\n%s", out)
	}
	if b, err := os.ReadFile(written); err != nil || !strings.HasPrefix(string(b), "crasher pid=") {
		t.Errorf("--write: %q, %v", b, err)
	}
	for _, bad := range [][]string{{"--delay=soon"}, {"--fork=-1"}, {"--touch=99999999"}} {
		cmd := exec.Command(prog, bad...)
		cmd.Dir = dir
		if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 {
			t.Errorf("crasher %q: %v, want exit code 2", bad, err)
		}
	}
}

// eachTarEntry calls fn with each entry of the tar stream r and a reader of
// its contents, failing the test on a malformed stream.
func eachTarEntry(t *testing.T, r io.Reader, fn func(hdr *tar.Header, contents io.Reader)) {
	t.Helper()
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		fn(hdr, tr)
	}
}
