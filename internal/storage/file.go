package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Dumps hold process memory: only the controller's user may read them.
const (
	defaultFileMode = 0o600
	defaultDirMode  = 0o700
)

// fileParams are the file:// URL options.
type fileParams struct {
	createDir         bool
	dirMode, fileMode fs.FileMode
	skipMetadata      bool
}

func parseFileParams(q url.Values) (*fileParams, error) {
	p := &fileParams{createDir: true, dirMode: defaultDirMode, fileMode: defaultFileMode}
	if v := q.Get("create_dir"); v != "" {
		// create_dir=false is for mount points: writing into an empty
		// directory on the root disk because the volume is missing would
		// fill the node.
		x, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: create_dir=%q is not true or false", ErrInvalidURL, v)
		}
		p.createDir = x
	}
	for name, dst := range map[string]*fs.FileMode{"dir_file_mode": &p.dirMode, "file_mode": &p.fileMode} {
		if v := q.Get(name); v != "" {
			m, err := strconv.ParseUint(v, 0, 32)
			if err != nil || m > 0o777 {
				return nil, fmt.Errorf("%w: %s=%q is not an octal permission such as 0600", ErrInvalidURL, name, v)
			}
			*dst = fs.FileMode(m)
		}
	}
	if p.dirMode&0o700 != 0o700 {
		return nil, fmt.Errorf("%w: dir_file_mode=%#o would lock the controller out of its own directories", ErrInvalidURL, p.dirMode)
	}
	switch v := q.Get("metadata"); v {
	case "":
	case "skip":
		p.skipMetadata = true
	default:
		return nil, fmt.Errorf("%w: metadata=%q: the only value is skip", ErrInvalidURL, v)
	}
	// no_tmp_dir is accepted and always in effect; see fileStore.write.
	return p, nil
}

// fileStore keeps objects as files under a directory, laid out as
// gocloud's fileblob did, so that directories written by earlier versions
// read back and the other way round: one file per object at its key, and
// next to it a JSON sidecar, <key>.attrs, with its content type and
// metadata.
type fileStore struct {
	loc *Location
	p   *fileParams
}

var _ Store = (*fileStore)(nil)

func openFile(loc *Location) (*fileStore, error) {
	p, err := parseFileParams(loc.Query)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(loc.Bucket)
	if err != nil && p.createDir && errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(loc.Bucket, p.dirMode); err == nil {
			fi, err = os.Stat(loc.Bucket)
		}
	}
	switch {
	case err != nil && !p.createDir && errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("directory %s does not exist, and create_dir=false: %w", loc.Bucket, err)
	case err != nil:
		return nil, fmt.Errorf("preparing directory %s: %w", loc.Bucket, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("preparing directory %s: not a directory", loc.Bucket)
	}
	return &fileStore{loc: loc, p: p}, nil
}

// path is the file of a key (without the prefix).
func (s *fileStore) path(key string) string {
	return filepath.Join(s.loc.Bucket, filepath.FromSlash(fileKeyPath(s.loc.Prefix+key)))
}

func (s *fileStore) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error) {
	if err := checkWrite(s.loc, key, &opts); err != nil {
		return 0, err
	}
	n, err := s.write(ctx, s.path(key), CtxReader{Ctx: ctx, R: r}, &opts)
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	return n, nil
}

// write copies r into a temp file next to path and renames it into place
// once it is complete, after the sidecar; on any failure, the temp file is
// removed and nothing changes at path.
func (s *fileStore) write(ctx context.Context, path string, r io.Reader, opts *WriteOptions) (n int64, err error) {
	if strings.HasSuffix(path, fileAttrsExt) {
		return 0, fmt.Errorf("keys ending in %s are reserved for attributes", fileAttrsExt)
	}
	if err := os.MkdirAll(filepath.Dir(path), s.p.dirMode); err != nil {
		return 0, err
	}
	// Temp files go next to their object, never into os.TempDir: a dump
	// must not sit in a world-visible /tmp, and a rename across file
	// systems would fail.
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*.tmp")
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	// Mode before the first byte goes in; CreateTemp makes it 0600.
	if err = f.Chmod(s.p.fileMode); err != nil {
		return 0, err
	}
	if n, err = io.Copy(f, r); err != nil {
		return n, err
	}
	if err = f.Close(); err != nil {
		return n, err
	}
	if err = ctx.Err(); err != nil {
		return n, err
	}
	if opts.IfAbsent {
		return n, s.publishIfAbsent(f.Name(), path, opts)
	}
	if !s.p.skipMetadata {
		if err = writeFileAttrs(path+fileAttrsExt, s.p.fileMode, opts, false); err != nil {
			return n, err
		}
		defer func() {
			if err != nil {
				_ = os.Remove(path + fileAttrsExt)
			}
		}()
	}
	return n, os.Rename(f.Name(), path)
}

// publishIfAbsent puts the complete temp file at path only if nothing is
// there: the attributes are created with O_EXCL first (a reader never sees
// the object without them), then the object is hard-linked into place,
// which fails with EEXIST rather than replace a file, and the temp name
// removed. Neither an object nor its attributes already at path are
// touched. Attributes left without their object by a write that died
// between the two steps are taken over: the key has one writer at a time.
func (s *fileStore) publishIfAbsent(tmp, path string, opts *WriteOptions) (err error) {
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if _, err := os.Lstat(path); err == nil {
		return ErrExists
	}
	ownAttrs := false
	if !s.p.skipMetadata {
		err := writeFileAttrs(path+fileAttrsExt, s.p.fileMode, opts, true)
		if errors.Is(err, fs.ErrExist) {
			if _, serr := os.Lstat(path); serr == nil {
				return ErrExists
			}
			err = writeFileAttrs(path+fileAttrsExt, s.p.fileMode, opts, false)
		}
		if err != nil {
			return err
		}
		ownAttrs = true
	}
	if err := os.Link(tmp, path); err != nil {
		if ownAttrs {
			_ = os.Remove(path + fileAttrsExt)
		}
		if errors.Is(err, fs.ErrExist) {
			return ErrExists
		}
		return err
	}
	return os.Remove(tmp)
}

// Stat reads an object's size and its attributes' metadata.
func (s *fileStore) Stat(_ context.Context, key string) (*ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	path := s.path(key)
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, s.readError(key, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, notFound(s.loc, key)
	}
	attrs, err := readFileAttrs(path + fileAttrsExt)
	if err != nil {
		return nil, s.readError(key, err)
	}
	return &ObjectInfo{Size: fi.Size(), Metadata: lowerKeys(attrs.Metadata, nil)}, nil
}

func (s *fileStore) Delete(_ context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	path := s.path(key)
	err := os.Remove(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		err = os.Remove(path + fileAttrsExt)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", s.loc.ObjectURL(key), err)
	}
	return nil
}

func (s *fileStore) Size(_ context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return 0, s.readError(key, err)
	}
	if !fi.Mode().IsRegular() {
		return 0, notFound(s.loc, key)
	}
	return fi.Size(), nil
}

func (s *fileStore) Read(_ context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	path := s.path(key)
	attrs, err := readFileAttrs(path + fileAttrsExt)
	if err != nil {
		return nil, s.readError(key, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, s.readError(key, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		_ = f.Close()
		if err != nil {
			return nil, s.readError(key, err)
		}
		return nil, notFound(s.loc, key)
	}
	return &objectReader{ReadCloser: f, contentType: attrs.ContentType}, nil
}

func (s *fileStore) SignedURL(_ context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkSign(s.loc, key, expiry); err != nil {
		return "", err
	}
	return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), ErrSignedURLUnsupported)
}

func (s *fileStore) Close() error { return nil }

func (s *fileStore) readError(key string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return notFound(s.loc, key)
	}
	return fmt.Errorf("reading %s: %w", s.loc.ObjectURL(key), err)
}

// fileAttrsExt names the sidecar that holds an object's attributes.
const fileAttrsExt = ".attrs"

// fileAttrs is fileblob's sidecar format (JSON, field names like
// extended attributes), which earlier versions wrote and read. MD5 stays
// empty, as fileblob left it for objects it did not write; the fields this
// package does not set stay empty too, and are written all the same.
type fileAttrs struct {
	CacheControl       string            `json:"user.cache_control"`
	ContentDisposition string            `json:"user.content_disposition"`
	ContentEncoding    string            `json:"user.content_encoding"`
	ContentLanguage    string            `json:"user.content_language"`
	ContentType        string            `json:"user.content_type"`
	Metadata           map[string]string `json:"user.metadata"`
	MD5                []byte            `json:"md5"`
}

// writeFileAttrs writes the sidecar of an object about to be renamed into
// place, as fileblob did before its rename: a reader never sees the object
// without its attributes.
// With excl the sidecar must not exist yet.
func writeFileAttrs(path string, mode fs.FileMode, opts *WriteOptions, excl bool) error {
	doc, err := json.Marshal(fileAttrs{ContentType: opts.ContentType, Metadata: opts.Metadata})
	if err != nil {
		return fmt.Errorf("encoding attributes: %w", err)
	}
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC | oNoFollow
	if excl {
		flags |= os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, mode)
	if err != nil {
		return err
	}
	if err := f.Chmod(mode); err != nil { // An existing sidecar keeps its mode otherwise.
		_ = f.Close()
		return err
	}
	if _, err := f.Write(append(doc, '\n')); err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return err
	}
	return f.Close()
}

// readFileAttrs reads an object's sidecar; an object without one (written
// with metadata=skip, or by hand) is application/octet-stream, as fileblob
// had it.
func readFileAttrs(path string) (*fileAttrs, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &fileAttrs{ContentType: "application/octet-stream"}, nil
	}
	if err != nil {
		return nil, err
	}
	a := &fileAttrs{}
	if err := json.Unmarshal(b, a); err != nil {
		return nil, fmt.Errorf("attributes %s: %w", path, err)
	}
	return a, nil
}
