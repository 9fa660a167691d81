package main

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// The annotations of index.json's descriptor that name the image:
// containerd's import (`ctr -n k8s.io images import`) takes the full name
// from the first, other OCI tools the tag from the second.
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// writeLayoutTar writes an OCI image layout holding one image or image index
// (what), its descriptor in index.json annotated with the image's full name
// and tag, as a tar file at dst. The tar's entries are sorted, owned by 0:0,
// of modes 0644 and 0755 and dated mtime, so the file's bytes depend only on
// the image. dst is replaced whole: readers never see half a file.
func writeLayoutTar(dst string, what any, name, tag string, mtime time.Time) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dst), ".layout-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(tmp) }()
	dir := filepath.Join(tmp, "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	annotations := layout.WithAnnotations(map[string]string{annotationImageName: name, annotationRefName: tag})
	switch w := what.(type) {
	case v1.ImageIndex:
		err = p.AppendIndex(w, annotations)
	case v1.Image:
		var cf *v1.ConfigFile
		if cf, err = w.ConfigFile(); err == nil {
			err = p.AppendImage(w, annotations, layout.WithPlatform(*cf.Platform()))
		}
	default:
		err = fmt.Errorf("%T is neither an image nor an index", what)
	}
	if err != nil {
		return fmt.Errorf("writing the layout of %s: %w", name, err)
	}
	out := filepath.Join(tmp, "out.tar")
	if err := tarDir(dir, out, mtime); err != nil {
		return err
	}
	return os.Rename(out, dst)
}

// tarDir writes the tree under root into the tar file out.
func tarDir(root, out string, mtime time.Time) (err error) {
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatPAX}
		switch {
		case d.IsDir():
			hdr.Typeflag, hdr.Mode, hdr.Name = tar.TypeDir, 0o755, hdr.Name+"/"
			return tw.WriteHeader(hdr)
		case d.Type().IsRegular():
			info, err := d.Info()
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o644, info.Size()
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			src, err := os.Open(p)
			if err != nil {
				return err
			}
			defer src.Close()
			_, err = io.Copy(tw, src)
			return err
		default:
			return fmt.Errorf("%s: not a regular file or directory", p)
		}
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
