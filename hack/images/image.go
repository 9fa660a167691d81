package main

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// layerSpec is one layer of an image and the history line that says what it
// holds.
type layerSpec struct {
	createdBy string
	files     []file
}

// imageSpec is one platform's image: its layers and its config.
type imageSpec struct {
	platform v1.Platform
	layers   []layerSpec
	config   v1.Config
}

// layer makes a gzip-compressed OCI layer of files. It compresses once, here
// (go-containerregistry would compress again for the digest, the size and
// the write), with klauspost/compress at the version go.mod pins; its gzip
// header carries no time or name, so the bytes depend only on the files and
// the time.
func layer(files []file, created time.Time) (v1.Layer, error) {
	raw, err := layerTar(files, created)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(raw); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	compressed := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
}

// buildImage assembles spec on an empty base, with OCI media types and every
// time set to created.
func buildImage(spec imageSpec, created time.Time) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, ls := range spec.layers {
		l, err := layer(ls.files, created)
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{
			Layer:     l,
			MediaType: types.OCILayer,
			History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: ls.createdBy},
		})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.OS = spec.platform.OS
	cf.Architecture = spec.platform.Architecture
	cf.Variant = spec.platform.Variant
	cf.Config = spec.config
	return mutate.ConfigFile(img, cf)
}

// buildIndex makes an OCI image index of one image per platform, each
// descriptor naming its platform.
func buildIndex(specs []imageSpec, created time.Time) (v1.ImageIndex, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	adds := make([]mutate.IndexAddendum, 0, len(specs))
	for _, spec := range specs {
		img, err := buildImage(spec, created)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", platformString(spec.platform), err)
		}
		p := spec.platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return mutate.AppendManifests(idx, adds...), nil
}

// platformFor is the OCI platform of a Go GOARCH on linux; arm64 carries the
// variant v8, as container runtimes normalise it.
func platformFor(goarch string) v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: goarch}
	if goarch == "arm64" {
		p.Variant = "v8"
	}
	return p
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// exposed turns port specs ("8081/tcp") into a config's ExposedPorts.
func exposed(ports ...string) map[string]struct{} {
	if len(ports) == 0 {
		return nil
	}
	m := make(map[string]struct{}, len(ports))
	for _, p := range ports {
		m[p] = struct{}{}
	}
	return m
}

// sortedKeys is for messages and tests.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
