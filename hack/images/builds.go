package main

import (
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// CoreDog's image config: what the Dockerfile's final stage says (USER,
// ENTRYPOINT, EXPOSE, LABEL; TestDockerfileAgrees holds them equal) and the
// environment of its base, distroless/static:nonroot.
var (
	coreDogUser       = "65532:65532"
	coreDogEntrypoint = []string{"/manager"}
	// coreDogPorts are the default listeners: 8081 the health probes and
	// 8443 the metrics of both binaries, 9443 the agent's dump endpoint.
	coreDogPorts  = []string{"8081/tcp", "8443/tcp", "9443/tcp"}
	coreDogLabels = map[string]string{
		"org.opencontainers.image.title":       "coredog",
		"org.opencontainers.image.description": "CoreDog captures core dumps on Kubernetes nodes: the manager (entrypoint) and the node agent (/agent)",
		"org.opencontainers.image.source":      "https://github.com/coredog/coredog",
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	distrolessEnv = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"SSL_CERT_FILE=" + caBundlePath,
	}
	// coreDogBinaries are the packages built into the image and where each
	// goes: the Dockerfile's COPY destinations.
	coreDogBinaries = []struct{ pkg, dest string }{
		{"./cmd/manager", "/manager"},
		{"./cmd/agent", "/agent"},
	}
)

// buildCoreDog builds the manager and the agent for each platform and writes
// their image index.
func buildCoreDog(o options, work string) (result, error) {
	base := baseFiles()
	var specs []imageSpec
	for _, p := range o.platforms {
		var bins []file
		for _, b := range coreDogBinaries {
			out := filepath.Join(work, "coredog", p.Architecture, filepath.Base(b.dest))
			if err := goBuild(o, p.Architecture, b.pkg, out); err != nil {
				return result{}, err
			}
			data, err := readStatic(out, p.Architecture)
			if err != nil {
				return result{}, err
			}
			bins = append(bins, regular(b.dest, 0o755, data))
		}
		specs = append(specs, imageSpec{
			platform: p,
			layers: []layerSpec{
				{createdBy: "hack/images: distroless/static:nonroot's files (users, /tmp, " + nonrootHome + ", CA bundle)", files: base},
				{createdBy: "hack/images: CGO_ENABLED=0 go build -trimpath ./cmd/manager ./cmd/agent", files: bins},
			},
			config: v1.Config{
				User:         coreDogUser,
				Entrypoint:   coreDogEntrypoint,
				Env:          distrolessEnv,
				WorkingDir:   nonrootHome,
				ExposedPorts: exposed(coreDogPorts...),
				Labels:       coreDogLabels,
			},
		})
	}
	idx, err := buildIndex(specs, o.created)
	if err != nil {
		return result{}, err
	}
	return finish(o, "coredog.tar", o.image, idx, o.platforms)
}

// pauseUser and pauseVersion are Kubernetes' build/pause's.
const (
	pauseUser    = "65535:65535"
	pauseVersion = "v3.10-coredog"
	// kubernetesModule is the module whose build/pause/linux/pause.c is
	// compiled, and kubernetesSum its go.sum hash, checked after download.
	kubernetesModule = "k8s.io/kubernetes@v1.37.2"
	kubernetesSum    = "h1:A2VDEiObzkYqFTKhSsn0ZEb0RlLEXpHWj93gi2HqEwE="
)

// buildPause compiles pause.c as Kubernetes' build/pause/Makefile does
// (-Os -Wall -Werror -static) and writes registry.k8s.io/pause:3.10.
func buildPause(o options, work, arch string) (result, error) {
	dir, err := moduleDir(o, kubernetesModule, kubernetesSum)
	if err != nil {
		return result{}, err
	}
	src, err := os.ReadFile(filepath.Join(dir, "build", "pause", "linux", "pause.c"))
	if err != nil {
		return result{}, err
	}
	bin, err := gcc(o, work, "pause", src, arch, "-Os", "-Wall", "-Werror", "-static", "-DVERSION="+pauseVersion)
	if err != nil {
		return result{}, err
	}
	spec := imageSpec{
		platform: platformFor(arch),
		layers: []layerSpec{{
			createdBy: "hack/images: gcc -Os -static build/pause/linux/pause.c of " + kubernetesModule,
			files:     []file{regular("/pause", 0o755, bin)},
		}},
		config: v1.Config{User: pauseUser, Entrypoint: []string{"/pause"}},
	}
	img, err := buildImage(spec, o.created)
	if err != nil {
		return result{}, err
	}
	return finish(o, "pause.tar", PauseImage, img, []v1.Platform{spec.platform})
}

// crasherSource is the crashing workload's source in the module.
const crasherSource = "test/crasher/crasher.c"

// buildCrasher compiles test/crasher/crasher.c with debug information (the
// agent's backtrace has names to find) and writes coredog.test/crasher:v1:
// /crasher as nonroot, in /tmp, where a core_pattern of "core" can write.
func buildCrasher(o options, work, arch string) (result, error) {
	src, err := os.ReadFile(filepath.Join(o.src, crasherSource))
	if err != nil {
		return result{}, err
	}
	bin, err := gcc(o, work, "crasher", src, arch, "-O0", "-g", "-Wall", "-Wextra", "-Werror", "-static")
	if err != nil {
		return result{}, err
	}
	spec := imageSpec{
		platform: platformFor(arch),
		layers: []layerSpec{{
			createdBy: "hack/images: gcc -O0 -g -static " + crasherSource,
			files: []file{
				regular("/crasher", 0o755, bin),
				dir("/tmp", 0o777|modeSticky, 0, 0),
			},
		}},
		config: v1.Config{
			User:       coreDogUser,
			Entrypoint: []string{"/crasher"},
			WorkingDir: "/tmp",
			Labels: map[string]string{
				"org.opencontainers.image.title":       "crasher",
				"org.opencontainers.image.description": "Dumps core on purpose: CoreDog's real-node test workload (" + crasherSource + ")",
				"org.opencontainers.image.source":      "https://github.com/coredog/coredog",
				"org.opencontainers.image.licenses":    "Apache-2.0",
			},
		},
	}
	img, err := buildImage(spec, o.created)
	if err != nil {
		return result{}, err
	}
	return finish(o, "crasher.tar", CrasherImage, img, []v1.Platform{spec.platform})
}

// goBuild builds pkg for linux/arch as `make build` does.
func goBuild(o options, arch, pkg, out string) error {
	cmd := exec.Command(o.goCmd, "build", "-trimpath", "-o", out, pkg)
	cmd.Dir = o.src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("GOARCH=%s go build %s: %w\n%s", arch, pkg, err, b)
	}
	return nil
}

// gcc compiles one C file into a static executable for the build host,
// which must be arch. It compiles in a directory of its own under work, by
// relative names, with that directory mapped to "." in debug information,
// so the output does not depend on where work is.
func gcc(o options, work, name string, src []byte, arch string, flags ...string) ([]byte, error) {
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, name+".c"), src, 0o644); err != nil {
		return nil, err
	}
	args := append([]string{"-ffile-prefix-map=" + dir + "=.", "-Wl,--build-id=sha1"}, flags...)
	args = append(args, "-o", name, name+".c")
	cmd := exec.Command(o.gccCmd, args...)
	cmd.Dir = dir
	// Locale and the build host's compiler environment stay out of the output.
	cmd.Env = append(os.Environ(), "LC_ALL=C", "SOURCE_DATE_EPOCH="+fmt.Sprint(o.created.Unix()))
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s %v (needs gcc and glibc's static libraries, libc6-dev): %w\n%s", o.gccCmd, args, err, b)
	}
	return readStatic(filepath.Join(dir, name), arch)
}

// moduleDir downloads module@version into the module cache (outside the
// main module, so go.mod and go.sum stay as they are), checks its hash and
// returns its directory.
func moduleDir(o options, module, sum string) (string, error) {
	cmd := exec.Command(o.goCmd, "mod", "download", "-json", module)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w\n%s%s", module, err, out, stderr.Bytes())
	}
	var m struct{ Dir, Sum, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download %s: %w", module, err)
	}
	switch {
	case m.Error != "":
		return "", fmt.Errorf("go mod download %s: %s", module, m.Error)
	case m.Sum != sum:
		return "", fmt.Errorf("go mod download %s: hash %s, want %s", module, m.Sum, sum)
	}
	return m.Dir, nil
}

// elfMachines are the ELF machines of the architectures built.
var elfMachines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// errNotStatic is returned for an executable that needs a dynamic loader.
var errNotStatic = errors.New("not a static executable")

// checkStatic fails unless path is a static ELF executable for arch: of its
// machine, with no program interpreter and no shared libraries.
func checkStatic(path, arch string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	want, ok := elfMachines[arch]
	if !ok {
		return fmt.Errorf("%s: no ELF machine known for %s", path, arch)
	}
	if f.Machine != want {
		return fmt.Errorf("%s: ELF machine %s, want %s (%s)", path, f.Machine, want, arch)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s: ELF type %s is not an executable", path, f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: %w (it has a program interpreter)", path, errNotStatic)
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(libs) != 0 {
		return fmt.Errorf("%s: %w (it needs %v)", path, errNotStatic, libs)
	}
	return nil
}

// readStatic checks path with checkStatic and returns its contents.
func readStatic(path, arch string) ([]byte, error) {
	if err := checkStatic(path, arch); err != nil {
		return nil, err
	}
	return os.ReadFile(path)
}
