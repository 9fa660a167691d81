// Command krew builds kubectl-coredog's release archives and its krew plugin
// manifest (hack/krew.sh and `make krew` run it; test/krew runs it for one
// platform). For each os/arch it cross-compiles ./cmd/kubectl-coredog
// (CGO_ENABLED=0, -trimpath), packs the binary and the repository's licence
// file (LICENSE) into a reproducible
// tar.gz, and fills coredog.yaml.tmpl with each archive's URI and sha256.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"
	"time"
)

// allPlatforms are the os/arch pairs a release ships.
const allPlatforms = "linux/amd64,linux/arm64,darwin/amd64,darwin/arm64,windows/amd64,windows/arm64"

// releaseURL is where a published archive lives; krew downloads it from
// there unless `kubectl krew install --archive` names a local file.
const releaseURL = "https://github.com/coredog/coredog/releases/download/%s/%s"

// licenceFiles are tried in order; krew-index wants a licence among the
// installed files.
var licenceFiles = []string{"LICENSE", "LICENSE.txt", "LICENSE.md", "COPYING"}

// versionRE is krew's rule for spec.version: a v-prefixed semantic version.
var versionRE = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`)

// archiveTime is every archive entry's modification time, so that the same
// sources give the same bytes and the same sha256.
var archiveTime = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// Platform is one entry of the manifest's spec.platforms.
type Platform struct {
	OS, Arch string
	Archive  string // file name under the output directory
	URI      string
	SHA256   string
	Bin      string
	Files    []string
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "krew:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fl := flag.NewFlagSet("krew", flag.ContinueOnError)
	version := fl.String("version", "v0.1.0", "release version (spec.version and the release tag in each URI)")
	platforms := fl.String("platforms", allPlatforms, "comma-separated os/arch pairs to build")
	out := fl.String("out", "dist", "output directory for the archives and coredog.yaml")
	repo := fl.String("repo", ".", "repository root")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if !versionRE.MatchString(*version) {
		return fmt.Errorf("version %q is not a v-prefixed semantic version (v1.2.3)", *version)
	}
	licence, err := findLicence(*repo)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "coredog-krew-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()

	var plats []Platform
	for pair := range strings.SplitSeq(*platforms, ",") {
		goos, goarch, ok := strings.Cut(strings.TrimSpace(pair), "/")
		if !ok || goos == "" || goarch == "" {
			return fmt.Errorf("platform %q is not os/arch", pair)
		}
		p, err := buildPlatform(*repo, work, *out, *version, licence, goos, goarch)
		if err != nil {
			return fmt.Errorf("%s/%s: %w", goos, goarch, err)
		}
		plats = append(plats, p)
		fmt.Fprintf(os.Stderr, "%s  %s\n", p.SHA256, filepath.Join(*out, p.Archive))
	}

	manifest, err := render(filepath.Join(*repo, "hack", "krew", "coredog.yaml.tmpl"), *version, plats)
	if err != nil {
		return err
	}
	path := filepath.Join(*out, "coredog.yaml")
	if err := os.WriteFile(path, manifest, 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", path)
	return nil
}

func findLicence(repo string) (string, error) {
	for _, name := range licenceFiles {
		if fi, err := os.Stat(filepath.Join(repo, name)); err == nil && fi.Mode().IsRegular() {
			return name, nil
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("none of %v in %s", licenceFiles, repo)
}

// buildPlatform cross-compiles the plugin for goos/goarch and packs it.
func buildPlatform(repo, work, out, version, licence, goos, goarch string) (Platform, error) {
	bin := "kubectl-coredog"
	if goos == "windows" {
		bin += ".exe"
	}
	binPath := filepath.Join(work, goos+"-"+goarch, bin)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", binPath, "./cmd/kubectl-coredog")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return Platform{}, fmt.Errorf("go build: %w", err)
	}
	archive := fmt.Sprintf("kubectl-coredog_%s_%s_%s.tar.gz", version, goos, goarch)
	data, err := tarGz([]entry{
		{name: bin, path: binPath, mode: 0o755},
		{name: licence, path: filepath.Join(repo, licence), mode: 0o644},
	})
	if err != nil {
		return Platform{}, err
	}
	if err := os.WriteFile(filepath.Join(out, archive), data, 0o644); err != nil {
		return Platform{}, err
	}
	sum := sha256.Sum256(data)
	return Platform{
		OS: goos, Arch: goarch,
		Archive: archive,
		URI:     fmt.Sprintf(releaseURL, version, archive),
		SHA256:  hex.EncodeToString(sum[:]),
		Bin:     bin,
		Files:   []string{bin, licence},
	}, nil
}

type entry struct {
	name, path string
	mode       int64
}

// tarGz packs the entries with fixed owners and times.
func tarGz(entries []entry) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(gz)
	for _, e := range entries {
		if err := addFile(tw, e); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func addFile(tw *tar.Writer, e entry) error {
	f, err := os.Open(e.path)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{
		Typeflag: tar.TypeReg,
		Name:     e.name,
		Size:     fi.Size(),
		Mode:     e.mode,
		ModTime:  archiveTime,
		Format:   tar.FormatPAX,
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("packing %s: %w", e.name, err)
	}
	return nil
}

func render(tmplPath, version string, plats []Platform) ([]byte, error) {
	tmpl, err := template.New(filepath.Base(tmplPath)).Option("missingkey=error").ParseFiles(tmplPath)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, struct {
		Version   string
		Platforms []Platform
	}{version, plats}); err != nil {
		return nil, fmt.Errorf("rendering %s: %w", tmplPath, err)
	}
	return buf.Bytes(), nil
}
