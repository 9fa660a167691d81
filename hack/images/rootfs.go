package main

import (
	"archive/tar"
	"bytes"
	"encoding/pem"
	"fmt"
	"path"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"
)

// file is one entry of an image layer. Every field of its tar header comes
// from here and from the build's fixed time: nothing of the build host's
// (owner names, modes, times, extended attributes) reaches the layer.
type file struct {
	// name is the absolute path in the image, e.g. /etc/passwd.
	name string
	// mode holds the permission bits and at most the sticky bit; setuid and
	// setgid are refused.
	mode     int64
	uid, gid int
	dir      bool
	data     []byte
}

func dir(name string, mode int64, uid, gid int) file {
	return file{name: name, mode: mode, uid: uid, gid: gid, dir: true}
}

func regular(name string, mode int64, data []byte) file {
	return file{name: name, mode: mode, data: data}
}

const (
	// modeSticky is tar's sticky bit (c_ISVTX).
	modeSticky = 0o1000
	// modeSetID is tar's setuid and setgid bits.
	modeSetID = 0o6000
)

// layerTar writes files, sorted by name so that every parent directory comes
// before what it holds, as an uncompressed tar with every time set to mtime
// and owners by number only.
func layerTar(files []file, mtime time.Time) ([]byte, error) {
	files = slices.Clone(files)
	slices.SortFunc(files, func(a, b file) int { return strings.Compare(a.name, b.name) })
	seen := map[string]bool{"/": true}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i, f := range files {
		if !path.IsAbs(f.name) || path.Clean(f.name) != f.name || f.name == "/" {
			return nil, fmt.Errorf("%q: not a clean absolute path", f.name)
		}
		if i > 0 && files[i-1].name == f.name {
			return nil, fmt.Errorf("%s: twice", f.name)
		}
		if !seen[path.Dir(f.name)] {
			return nil, fmt.Errorf("%s: its directory %s is not in the layer", f.name, path.Dir(f.name))
		}
		if f.mode&^(0o777|modeSticky) != 0 {
			return nil, fmt.Errorf("%s: mode %o has bits other than the permissions and the sticky bit", f.name, f.mode)
		}
		hdr := &tar.Header{
			Name:    strings.TrimPrefix(f.name, "/"),
			Mode:    f.mode,
			Uid:     f.uid,
			Gid:     f.gid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if f.dir {
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
			seen[f.name] = true
		} else {
			hdr.Typeflag = tar.TypeReg
			hdr.Size = int64(len(f.data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// The nonroot user of the image, as in distroless's :nonroot images.
const (
	nonrootUID  = 65532
	nonrootHome = "/home/nonroot"
)

// passwd and group are distroless's entries for root, nobody and nonroot.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group = "root:x:0:\n" +
		"nobody:x:65534:\n" +
		"nonroot:x:65532:\n"
	// nsswitch makes glibc-style lookups (and Go's resolver) use the files
	// and then DNS, as distroless does.
	nsswitch = "passwd: files\ngroup: files\nhosts: files dns\n"
)

// caBundlePath is where Go's crypto/x509 (and distroless) look for the
// system roots; the image's SSL_CERT_FILE names it too.
const caBundlePath = "/etc/ssl/certs/ca-certificates.crt"

// caBundle is the PEM bundle of the Mozilla NSS roots that the Go module
// golang.org/x/crypto/x509roots/fallback embeds, at the version go.sum pins:
// the same bytes on every build host, changing only when go.mod does. Roots
// that NSS trusts only with a distrust-after date are left out: a PEM file
// cannot carry that constraint, and trusting them without it would trust
// more than NSS does.
func caBundle() ([]byte, int) {
	var buf bytes.Buffer
	n := 0
	for root := range bundle.Roots() {
		if root.Constraint != nil {
			continue
		}
		_ = pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: root.Certificate})
		n++
	}
	return buf.Bytes(), n
}

// baseFiles is the filesystem the binaries of CoreDog need around them, in
// place of distroless/static:nonroot's: the users, /tmp, the nonroot home and
// the CA bundle.
func baseFiles() []file {
	roots, _ := caBundle()
	return []file{
		dir("/etc", 0o755, 0, 0),
		regular("/etc/passwd", 0o644, []byte(passwd)),
		regular("/etc/group", 0o644, []byte(group)),
		regular("/etc/nsswitch.conf", 0o644, []byte(nsswitch)),
		dir("/etc/ssl", 0o755, 0, 0),
		dir("/etc/ssl/certs", 0o755, 0, 0),
		regular(caBundlePath, 0o644, roots),
		dir("/home", 0o755, 0, 0),
		dir(nonrootHome, 0o700, nonrootUID, nonrootUID),
		dir("/tmp", 0o777|modeSticky, 0, 0),
	}
}
