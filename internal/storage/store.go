package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
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
	// Stat returns the size and metadata of key, or an error wrapping
	// ErrNotFound.
	Stat(ctx context.Context, key string) (*ObjectInfo, error)
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
	// IfAbsent writes only when no object is at key, and fails with an
	// error wrapping ErrExists otherwise, leaving that object as it was.
	// The store decides, atomically: If-None-Match: * on S3's PutObject and
	// CompleteMultipartUpload and on Azure's Put Block List, the
	// precondition DoesNotExist (ifGenerationMatch=0) on GCS, a hard link
	// that fails with EEXIST on the file system.
	IfAbsent bool
}

// ObjectInfo is what Stat tells about an object.
type ObjectInfo struct {
	Size int64
	// Metadata as written (WriteOptions.Metadata), keys in lower case:
	// S3 lowercases them, and Azure's SDK capitalises them.
	Metadata map[string]string
}

// ErrExists is wrapped by Write with IfAbsent when an object is at the key.
var ErrExists = errors.New("an object is already stored at the key")

// lowerKeys returns md with its keys in lower case, and its values
// unescaped with unescape (nil: as they are).
func lowerKeys(md map[string]string, unescape func(string) (string, error)) map[string]string {
	out := make(map[string]string, len(md))
	for k, v := range md {
		if unescape != nil {
			if u, err := unescape(v); err == nil {
				v = u
			}
		}
		out[strings.ToLower(k)] = v
	}
	return out
}

// MaxObjectSize is the largest object written: every store takes it in
// parts of at most maxPartSize (S3 allows 10,000 parts, of which the first
// fewParts/2 are small). Larger dumps are not uploaded.
const MaxObjectSize = 512 << 30

// ErrNotFound is wrapped by Size and Read when there is no object at a key.
var ErrNotFound = errors.New("object not found")

// Write tuning. The part size bounds what one write holds in memory: S3
// holds one part and a read-ahead of s3SmallRead (the next part's start,
// read while a part uploads), Azure azureConcurrency blocks, GCS one chunk.
// S3 parts follow s3PartSize. Azure blocks and GCS chunks are
// minPartSize when the object's size is known to fit in
// fewParts of them; larger objects get defaultPartSize, or more where
// maxParts of those could not hold them. Past fewParts, small parts only
// add requests, and some S3-compatible servers do not take many:
// versitygw's posix backend keeps an upload's part list in one extended
// attribute, which Linux limits to 64 KiB, and completes 800 parts but not
// 820. Objects of unknown size get defaultPartSize, which allows up to
// 78 GiB.
const (
	minPartSize     = 5 << 20
	defaultPartSize = 8 << 20
	// maxPartSize bounds a part, a block and a chunk whatever size an
	// object claims: sizes come from CoreDumps, which agents write, and a
	// GCS chunk or the Azure blocks are allocated whole before any byte
	// arrives.
	maxPartSize      = 64 << 20
	maxParts         = 10000
	fewParts         = 768
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
	switch loc.Scheme {
	case SchemeS3:
		return opened(openS3(ctx, loc, creds))
	case SchemeGCS:
		return openGCS(ctx, loc, creds)
	case SchemeAzure:
		return opened(openAzure(loc, creds))
	case SchemeFile:
		return opened(openFile(loc))
	}
	return nil, fmt.Errorf("%w: scheme %q is not one of s3, gs, azblob, file", ErrInvalidURL, loc.Scheme)
}

// opened returns a nil Store with an error, rather than an interface that
// holds a nil pointer.
func opened[T Store](s T, err error) (Store, error) {
	if err != nil {
		return nil, err
	}
	return s, nil
}

// checkWrite checks a write's key and options before anything is sent, and
// fills in the default content type.
func checkWrite(loc *Location, key string, opts *WriteOptions) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := checkMetadata(opts.Metadata); err != nil {
		return fmt.Errorf("writing %s: %w", loc.ObjectURL(key), err)
	}
	if opts.ContentType == "" {
		opts.ContentType = "application/octet-stream"
	}
	return nil
}

// checkSign checks a signing request's key and expiry.
func checkSign(loc *Location, key string, expiry time.Duration) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if expiry <= 0 || expiry > MaxSignedURLExpiry {
		return fmt.Errorf("signing %s: expiry %s is not between 0 and %s", loc.ObjectURL(key), expiry, MaxSignedURLExpiry)
	}
	return nil
}

// notFound is the error of Size and Read for a missing object.
func notFound(loc *Location, key string) error {
	return fmt.Errorf("%w: %s", ErrNotFound, loc.ObjectURL(key))
}

// ErrAccessDenied is wrapped, together with ErrCredentials, when a store
// answered that the credentials' identity may not do what was asked (HTTP
// 403): the credentials are valid but lack a permission.
var ErrAccessDenied = errors.New("access denied")

// refusal wraps err, a store's answer with the given HTTP status, in
// ErrCredentials (and ErrAccessDenied for 403), naming the bucket; other
// errors are returned as they are.
func refusal(loc *Location, status int, err error) error {
	switch status {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: the store did not accept the credentials for bucket %q: %w", ErrCredentials, loc.Bucket, err)
	case http.StatusForbidden:
		return fmt.Errorf("%w: %w to bucket %q: %w", ErrCredentials, ErrAccessDenied, loc.Bucket, err)
	}
	return err
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
	return int(min(maxPartSize, max(defaultPartSize, per)))
}

// objectReader is an object's content with the type it was stored with.
type objectReader struct {
	io.ReadCloser
	contentType string
}

// ContentType is the object's Content-Type.
func (r *objectReader) ContentType() string { return r.contentType }

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
			if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '-' && c != '_' {
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

// partsHeld counts the bytes of part buffers taken and not yet returned,
// and the most it reached, which tests check against each
// store's budget.
var partsHeld heldBytes

type heldBytes struct {
	sync.Mutex
	now, peak int
}

func (h *heldBytes) add(n int) {
	h.Lock()
	h.now += n
	h.peak = max(h.peak, h.now)
	h.Unlock()
}

// resetPeak starts a new peak from what is held now and returns the old one.
func (h *heldBytes) resetPeak() int {
	h.Lock()
	defer h.Unlock()
	p := h.peak
	h.peak = h.now
	return p
}

// fill reads from r until buf is full or r ends. end is set only when r
// returned io.EOF: a stream cut short reports io.ErrUnexpectedEOF (as
// net/http does for a truncated body), which must fail the write, not
// finish it, so io.ReadFull, which turns an EOF after some bytes into that
// same error, cannot tell the two apart.
func fill(r io.Reader, buf []byte) (n int, end bool, err error) {
	for n < len(buf) {
		var m int
		m, err = r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}
