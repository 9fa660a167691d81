package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
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
	// no_tmp_dir is accepted and always in effect; see openFile.
	return p, nil
}

func openFile(loc *Location) (*bucketStore, error) {
	p, err := parseFileParams(loc.Query)
	if err != nil {
		return nil, err
	}
	opts := &fileblob.Options{
		CreateDir:   p.createDir,
		DirFileMode: p.dirMode,
		// Temp files go next to their object, never into os.TempDir: a
		// dump must not sit in a world-visible /tmp, and a rename across
		// file systems would fail.
		NoTempDir: true,
		// fileblob's own sidecar comes with an MD5 of every byte written,
		// which costs more than the rest of a file write and which nothing
		// here reads; the sidecar is written below instead, without it.
		Metadata: fileblob.MetadataDontWrite,
	}
	bucket, err := fileblob.OpenBucket(loc.Bucket, opts)
	if err != nil {
		if !p.createDir && errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("directory %s does not exist, and create_dir=false: %w", loc.Bucket, err)
		}
		return nil, fmt.Errorf("preparing directory %s: %w", loc.Bucket, err)
	}
	s := &bucketStore{
		bucket: bucket,
		tune: func(wo *blob.WriterOptions) {
			wo.BeforeWrite = func(as func(any) bool) error {
				// Narrow the temp file before the first byte goes in;
				// fileblob creates it 0666 minus umask.
				var f *os.File
				if !as(&f) || f == nil {
					return errors.New("fileblob did not expose its temp file")
				}
				return f.Chmod(p.fileMode)
			}
		},
	}
	if !p.skipMetadata {
		path := func(fullKey string) string {
			// Checked keys need no escaping, so the path is plain.
			return filepath.Join(loc.Bucket, filepath.FromSlash(fullKey)) + fileAttrsExt
		}
		s.beforeCommit = func(fullKey string, wo *blob.WriterOptions) error {
			return writeFileAttrs(path(fullKey), p.fileMode, wo)
		}
		s.undoCommit = func(fullKey string) { _ = os.Remove(path(fullKey)) }
	}
	return s, nil
}

// fileAttrsExt names the sidecar fileblob reads an object's attributes from.
const fileAttrsExt = ".attrs"

// fileAttrs is fileblob's sidecar format (JSON, field names like
// extended attributes). fileblob reads it back for Attributes and readers;
// MD5 stays empty, as fileblob leaves it for objects it did not write.
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
// place, as fileblob does before its rename: a reader never sees the object
// without its attributes.
func writeFileAttrs(path string, mode fs.FileMode, wo *blob.WriterOptions) error {
	doc, err := json.Marshal(fileAttrs{
		CacheControl: wo.CacheControl, ContentDisposition: wo.ContentDisposition,
		ContentEncoding: wo.ContentEncoding, ContentLanguage: wo.ContentLanguage,
		ContentType: wo.ContentType, Metadata: wo.Metadata,
	})
	if err != nil {
		return fmt.Errorf("encoding attributes: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
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
