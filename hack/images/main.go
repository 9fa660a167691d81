// Command images builds CoreDog's container images without Docker, as ko
// does: static binaries, compiled here, put into layers with
// go-containerregistry on an empty base, written as OCI image layout tar
// files that `ctr -n k8s.io images import` loads into containerd.
//
//   - coredog.tar: ghcr.io/coredog/coredog:<tag>, an image index for
//     linux/amd64 and linux/arm64 of the Dockerfile's image: /manager (the
//     entrypoint) and /agent, built with CGO_ENABLED=0 go build -trimpath as
//     `make build` does, user 65532:65532, on distroless/static:nonroot's
//     filesystem (users, /tmp, the nonroot home, a CA bundle).
//   - pause.tar: registry.k8s.io/pause:3.10, Kubernetes' pause.c from the
//     k8s.io/kubernetes module, gcc -static, for the build host's arch.
//   - crasher.tar: coredog.test/crasher:v1, test/crasher/crasher.c, gcc
//     -static, for the build host's arch: the real-node suite's workload that
//     dumps core.
//
// Every time in the images and the tar files is -epoch (SOURCE_DATE_EPOCH),
// every owner and mode is set here, so two builds of one commit with one
// toolchain give the same bytes. images.json beside the tar files lists each
// file's image name and digest. `make images` runs it.
package main

import (
	"cmp"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Images this program can build, for -only.
const (
	imageCoreDog = "coredog"
	imagePause   = "pause"
	imageCrasher = "crasher"
)

// The names of the test images, which the real-node suite uses.
const (
	PauseImage   = "registry.k8s.io/pause:3.10"
	CrasherImage = "coredog.test/crasher:v1"
)

type options struct {
	src       string
	out       string
	image     string
	platforms []v1.Platform
	only      map[string]bool
	created   time.Time
	goCmd     string
	gccCmd    string
	logf      func(string, ...any)
}

// result is one written tar file, as images.json lists it.
type result struct {
	// File is the tar file's name in the output directory.
	File string `json:"file"`
	// Name is the image's full name (io.containerd.image.name).
	Name string `json:"name"`
	// Repository and Tag are Name's parts, for a chart's image.repository
	// and image.tag.
	Repository string `json:"repository"`
	Tag        string `json:"tag"`
	// Digest is the digest of the image index or manifest that Name points to.
	Digest string `json:"digest"`
	// Platforms are the platforms it holds.
	Platforms []string `json:"platforms"`
	// Size is the tar file's size in bytes.
	Size int64 `json:"size"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "images:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("images", flag.ContinueOnError)
	var o options
	var platforms, only string
	var epoch int64
	defEpoch, err := envEpoch()
	if err != nil {
		return err
	}
	fs.StringVar(&o.src, "src", ".", "Root of the CoreDog module.")
	fs.StringVar(&o.out, "out", "dist/images", "Directory of the tar files and images.json.")
	fs.StringVar(&o.image, "image", "ghcr.io/coredog/coredog:dev", "Full name of CoreDog's image, with registry and tag.")
	fs.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "Platforms of CoreDog's image (the test images are for the build host's only).")
	fs.StringVar(&only, "only", "coredog,pause,crasher", "Images to build: any of coredog, pause, crasher.")
	fs.Int64Var(&epoch, "epoch", defEpoch, "Seconds since 1970 of every time in the images and tar files (default $SOURCE_DATE_EPOCH, else 0).")
	fs.StringVar(&o.goCmd, "go", cmp.Or(os.Getenv("GO"), "go"), "The go command.")
	fs.StringVar(&o.gccCmd, "gcc", cmp.Or(os.Getenv("CC"), "gcc"), "The C compiler of the test images (glibc, static linking).")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.platforms, err = parsePlatforms(platforms); err != nil {
		return err
	}
	o.only = map[string]bool{}
	for s := range strings.SplitSeq(only, ",") {
		switch s {
		case imageCoreDog, imagePause, imageCrasher:
			o.only[s] = true
		default:
			return fmt.Errorf("-only: unknown image %q (coredog, pause, crasher)", s)
		}
	}
	o.created = time.Unix(epoch, 0).UTC()
	o.logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, format+"\n", a...) }
	results, err := build(o)
	if err != nil {
		return err
	}
	for _, r := range results {
		fmt.Printf("%s\t%s\t%s\t%d bytes\t%s\n", filepath.Join(o.out, r.File), r.Name, r.Digest, r.Size, strings.Join(r.Platforms, ","))
	}
	return nil
}

func envEpoch() (int64, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a number of seconds", s)
	}
	return n, nil
}

func parsePlatforms(s string) ([]v1.Platform, error) {
	var out []v1.Platform
	seen := map[string]bool{}
	for p := range strings.SplitSeq(s, ",") {
		osName, arch, ok := strings.Cut(p, "/")
		if !ok || osName != "linux" || (arch != "amd64" && arch != "arm64") {
			return nil, fmt.Errorf("-platforms: %q is not linux/amd64 or linux/arm64", p)
		}
		if seen[arch] {
			return nil, fmt.Errorf("-platforms: %s twice", p)
		}
		seen[arch] = true
		out = append(out, platformFor(arch))
	}
	return out, nil
}

// splitName checks that s is a full image name with a registry and a tag
// (containerd stores names as given, so "coredog:dev" would never match the
// "docker.io/library/coredog:dev" a kubelet asks for) and returns its parts.
func splitName(s string) (repo, tag string, err error) {
	t, err := name.NewTag(s, name.StrictValidation)
	if err != nil {
		return "", "", fmt.Errorf("image name %q: %w", s, err)
	}
	first, _, _ := strings.Cut(s, "/")
	if t.String() != s || t.RegistryStr() != first {
		return "", "", fmt.Errorf("image name %q: write it in full, with its registry (e.g. %s)", s, t.Name())
	}
	return t.Context().Name(), t.TagStr(), nil
}

// hostArch is the build host's GOARCH, that of the test images: gcc
// compiles for the machine it runs on.
func hostArch() string { return runtime.GOARCH }

// build writes the selected images into o.out and images.json, and returns
// what it wrote.
func build(o options) ([]result, error) {
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "coredog-images-")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(work) }()
	var results []result
	for _, img := range []string{imageCoreDog, imagePause, imageCrasher} {
		if !o.only[img] {
			continue
		}
		start := time.Now()
		var r result
		switch img {
		case imageCoreDog:
			r, err = buildCoreDog(o, work)
		case imagePause:
			r, err = buildPause(o, work, hostArch())
		case imageCrasher:
			r, err = buildCrasher(o, work, hostArch())
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", img, err)
		}
		o.logf("%s: %s %s in %s", r.File, r.Name, r.Digest, time.Since(start).Round(time.Millisecond))
		results = append(results, r)
	}
	j, err := json.MarshalIndent(results, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(o.out, "images.json"), append(j, '\n'), 0o644); err != nil {
		return nil, err
	}
	return results, nil
}

// finish writes what (an image or index) named imageName to file in o.out
// and describes it.
func finish(o options, file, imageName string, what interface{ Digest() (v1.Hash, error) }, platforms []v1.Platform) (result, error) {
	repo, tag, err := splitName(imageName)
	if err != nil {
		return result{}, err
	}
	dst := filepath.Join(o.out, file)
	if err := writeLayoutTar(dst, what, imageName, tag, o.created); err != nil {
		return result{}, err
	}
	d, err := what.Digest()
	if err != nil {
		return result{}, err
	}
	st, err := os.Stat(dst)
	if err != nil {
		return result{}, err
	}
	r := result{File: file, Name: imageName, Repository: repo, Tag: tag, Digest: d.String(), Size: st.Size()}
	for _, p := range platforms {
		r.Platforms = append(r.Platforms, platformString(p))
	}
	return r, nil
}
