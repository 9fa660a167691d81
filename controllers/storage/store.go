package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"
)

// Store is where dumps go. Implementations stream: memory stays bounded
// whatever the object size.
type Store interface {
	// Write streams r into key (the key without the location's prefix; Write
	// applies Location.Prefix) and returns the bytes written. It returns only
	// after the store confirmed the write. On any error, including a failing
	// r or a cancelled ctx, nothing is left at key that looks complete.
	Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// Size returns the size of key, or an error wrapping ErrNotFound.
	Size(ctx context.Context, key string) (int64, error)
	// Read opens key for reading; the caller closes it.
	Read(ctx context.Context, key string) (io.ReadCloser, error)
	// SignedURL returns a URL that lets whoever holds it GET key, without
	// other credentials, for expiry (at most MaxSignedURLExpiry). It does
	// not contact the store for S3, GCS with a key, or Azure with a shared
	// key. Stores that cannot sign (file://) return an error wrapping
	// ErrSignedURLUnsupported.
	SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error)
	Close() error
}

// MaxSignedURLExpiry is the longest life of a signed URL: S3's SigV4 and
// GCS's V4 signatures allow seven days.
const MaxSignedURLExpiry = 7 * 24 * time.Hour

// ErrSignedURLUnsupported is wrapped by SignedURL when the store, or the
// credentials it was opened with, cannot sign URLs.
var ErrSignedURLUnsupported = errors.New("the store cannot sign URLs")

// WriteOptions describe an object being written.
type WriteOptions struct {
	// ContentType defaults to application/octet-stream: sniffing a core dump
	// tells nothing.
	ContentType string
	// Metadata is stored with the object: a few small entries whose keys are
	// ASCII letters, digits, '-' and '_'.
	Metadata map[string]string
	// SizeHint, when positive, is an upper bound of the object's size. Parts
	// are then as small as the store's part limit allows, which bounds the
	// memory a write holds; without it they are sized for large objects.
	SizeHint int64
}

// ErrNotFound is wrapped by Size and Read when there is no object at a key.
var ErrNotFound = errors.New("object not found")

// Write tuning. The part size bounds what one write holds in memory: S3
// holds two parts (one uploading, one filling), Azure azureConcurrency
// blocks, GCS one chunk. One S3 part in flight keeps a single stream busy,
// since the next part is read while one uploads; more would multiply memory
// by the number of dumps uploading at once. Parts are
// minPartSize (S3's smallest) when the object's size is known to fit in
// fewParts of them; larger objects get defaultPartSize, or more where
// maxParts of those could not hold them. Past fewParts, small parts only
// add requests, and some S3-compatible servers do not take many: versitygw
// (posix backend on ext4) failed to complete a 4 GiB upload of 820 parts
// with ENOSPC, and completes 512 parts of 8 MiB. Objects of unknown size
// get defaultPartSize, which allows up to 78 GiB.
const (
	minPartSize      = 5 << 20
	defaultPartSize  = 8 << 20
	maxParts         = 10000
	fewParts         = 512
	azureConcurrency = 2
	// maxMetadataBytes is S3's limit for user metadata.
	maxMetadataBytes = 2 << 10
)

// Open opens the bucket for loc with credentials from a Secret's data (nil
// means each cloud's default chain). Open checks credentials and options
// but does not contact the store (finding Google default credentials may ask
// the metadata server), so a key the store refuses shows at the first write.
func Open(ctx context.Context, loc *Location, creds map[string][]byte) (Store, error) {
	if loc == nil {
		return nil, fmt.Errorf("%w: no location", ErrInvalidURL)
	}
	if err := CheckCredentials(loc.Scheme, creds); err != nil {
		return nil, err
	}
	var (
		s   *bucketStore
		err error
	)
	switch loc.Scheme {
	case SchemeS3:
		s, err = openS3(ctx, loc, creds)
	case SchemeGCS:
		// GCS is not a gocloud bucket: see gcs.go.
		return openGCS(ctx, loc, creds)
	case SchemeAzure:
		s, err = openAzure(ctx, loc, creds)
	case SchemeFile:
		s, err = openFile(loc)
	}
	if err != nil {
		return nil, err
	}
	s.loc = loc
	return s, nil
}

// bucketStore is a Store on a gocloud bucket; the scheme-specific parts are
// the hooks on writes.
type bucketStore struct {
	loc    *Location
	bucket *blob.Bucket
	// tune adjusts the writer options of every write (part sizes, file modes).
	tune func(*blob.WriterOptions)
	// put, when set, writes in place of the gocloud writer (S3).
	put func(ctx context.Context, fullKey string, r io.Reader, wo *blob.WriterOptions) (int64, error)
	// clean runs before and after every write with its full key: S3 aborts
	// what earlier, dead attempts at the key left behind, including parts
	// that were in flight when an attempt aborted its upload and reopened
	// it by landing afterwards.
	clean func(ctx context.Context, fullKey string)
	// beforeCommit runs once all bytes were written and before the writer is
	// closed, with the full key and the write's options; an error aborts the
	// write. undoCommit reverts it when the close then fails.
	beforeCommit func(fullKey string, wo *blob.WriterOptions) error
	undoCommit   func(fullKey string)
	// sign makes a signed GET URL for a full key; nil means the bucket's own
	// SignedURL.
	sign func(ctx context.Context, fullKey string, expiry time.Duration) (string, error)
}

var _ Store = (*bucketStore)(nil)

func (s *bucketStore) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := checkMetadata(opts.Metadata); err != nil {
		return 0, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	wo := &blob.WriterOptions{
		BufferSize:  partSizeFor(opts.SizeHint),
		ContentType: opts.ContentType,
		Metadata:    opts.Metadata,
	}
	if wo.ContentType == "" {
		wo.ContentType = "application/octet-stream"
	}
	if s.tune != nil {
		s.tune(wo)
	}
	// Cancelling wctx is how a gocloud write is aborted: the driver then
	// drops what it has (temp file, multipart upload) instead of committing.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	full := s.loc.Prefix + key
	if s.clean != nil {
		s.clean(ctx, full)
	}
	if s.put != nil {
		n, err := s.put(ctx, full, ctxReader{ctx: ctx, r: r}, wo)
		if err != nil {
			return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
		}
		s.clean(ctx, full)
		return n, nil
	}
	w, err := s.bucket.NewWriter(wctx, full, wo)
	if err != nil {
		return 0, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	n, err := io.Copy(w, ctxReader{ctx: ctx, r: r})
	if err == nil && s.beforeCommit != nil {
		err = s.beforeCommit(full, wo)
		if err == nil {
			defer func() {
				if err != nil {
					s.undoCommit(full)
				}
			}()
		}
	}
	if err != nil {
		cancel()
		_ = w.Close() // Required after an abort; it only reports the cancellation.
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	if err = w.Close(); err != nil {
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	if s.clean != nil {
		s.clean(ctx, full)
	}
	return n, nil
}

// partSizeFor is the part size for an object of at most size bytes (0:
// unknown), in whole MiB.
func partSizeFor(size int64) int {
	if size <= 0 {
		return defaultPartSize
	}
	if size <= fewParts*minPartSize {
		return minPartSize
	}
	const mib = 1 << 20
	per := (size/maxParts + mib) / mib * mib
	return int(max(defaultPartSize, per))
}

func (s *bucketStore) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	err := s.bucket.Delete(ctx, s.loc.Prefix+key)
	if err != nil && gcerrors.Code(err) != gcerrors.NotFound {
		return fmt.Errorf("deleting %s: %w", s.loc.ObjectURL(key), err)
	}
	return nil
}

func (s *bucketStore) Size(ctx context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	a, err := s.bucket.Attributes(ctx, s.loc.Prefix+key)
	if err != nil {
		return 0, s.readError(key, err)
	}
	return a.Size, nil
}

func (s *bucketStore) Read(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	r, err := s.bucket.NewReader(ctx, s.loc.Prefix+key, nil)
	if err != nil {
		return nil, s.readError(key, err)
	}
	return r, nil
}

func (s *bucketStore) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if expiry <= 0 || expiry > MaxSignedURLExpiry {
		return "", fmt.Errorf("signing %s: expiry %s is not between 0 and %s", s.loc.ObjectURL(key), expiry, MaxSignedURLExpiry)
	}
	if s.loc.Scheme == SchemeFile {
		return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), ErrSignedURLUnsupported)
	}
	full := s.loc.Prefix + key
	var (
		u   string
		err error
	)
	if s.sign != nil {
		u, err = s.sign(ctx, full, expiry)
	} else {
		u, err = s.bucket.SignedURL(ctx, full, &blob.SignedURLOptions{Expiry: expiry, Method: http.MethodGet})
	}
	if err != nil {
		if gcerrors.Code(err) == gcerrors.Unimplemented {
			err = fmt.Errorf("%w: %v", ErrSignedURLUnsupported, err)
		}
		return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), err)
	}
	return u, nil
}

func (s *bucketStore) Close() error {
	return s.bucket.Close()
}

func (s *bucketStore) readError(key string, err error) error {
	if gcerrors.Code(err) == gcerrors.NotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, s.loc.ObjectURL(key))
	}
	return fmt.Errorf("reading %s: %w", s.loc.ObjectURL(key), err)
}

// ctxReader stops a copy as soon as ctx is done, so that a cancelled write
// does not keep draining its source into a temp file nobody will keep.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// checkMetadata keeps metadata to what every store accepts as header names
// and within S3's size limit, so that a write fails before it starts rather
// than after the data went up.
func checkMetadata(md map[string]string) error {
	size := 0
	seen := make(map[string]bool, len(md))
	for k, v := range md {
		if k == "" {
			return errors.New("metadata key is empty")
		}
		// Stores lowercase keys, so Foo and foo would overwrite each other.
		lk := strings.ToLower(k)
		if seen[lk] {
			return fmt.Errorf("metadata keys differ only in case: %q", k)
		}
		seen[lk] = true
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("metadata key %q: only ASCII letters, digits, - and _ are allowed", k)
			}
		}
		size += len(k) + len(url.PathEscape(v))
	}
	if size > maxMetadataBytes {
		return fmt.Errorf("metadata is %d bytes, more than %d", size, maxMetadataBytes)
	}
	return nil
}
