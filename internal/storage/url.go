package storage

import (
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
)

// Schemes CoreDog stores into.
const (
	SchemeS3     = "s3"
	SchemeGCS    = "gs"
	SchemeAzure  = "azblob"
	SchemeFile   = "file"
	maxURLLength = 2048
)

// ErrInvalidURL is returned for storage URLs that cannot be used.
var ErrInvalidURL = errors.New("invalid storage URL")

// Location is a parsed storage URL.
type Location struct {
	Scheme string
	// Bucket is the bucket or container; for file:// the directory.
	Bucket string
	// Prefix is prepended to every key ("" or ending in "/").
	Prefix string
	// Query holds the driver options (region, endpoint, use_path_style, ...).
	Query url.Values
}

// knownQuery lists the query parameters each scheme accepts, so that a typo
// fails validation instead of being ignored silently.
var knownQuery = map[string][]string{
	SchemeS3: {"region", "endpoint", "use_path_style", "disable_https", "s3ForcePathStyle", "awssdk", "profile", "anonymous",
		"dualstack", "fips", "accelerate", "sse_type", "kmskeyid"},
	SchemeGCS:   {"access_id", "private_key_path", "anonymous", "endpoint"},
	SchemeAzure: {"domain", "protocol", "cdn", "localemu", "storage_account"},
	SchemeFile:  {"create_dir", "no_tmp_dir", "dir_file_mode", "file_mode", "metadata"},
}

// ParseURL checks a storage URL and splits it into its parts.
func ParseURL(raw string) (*Location, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidURL)
	}
	if len(raw) > maxURLLength {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, maxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidURL, err)
	}
	loc := &Location{Scheme: u.Scheme, Query: u.Query()}
	allowed, ok := knownQuery[u.Scheme]
	if !ok {
		return nil, fmt.Errorf("%w: scheme %q is not one of s3, gs, azblob, file", ErrInvalidURL, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: credentials do not belong in the URL; use spec.storage.secretRef", ErrInvalidURL)
	}
	for k := range loc.Query {
		if !contains(allowed, k) {
			return nil, fmt.Errorf("%w: unknown option %q for %s:// (known: %s)", ErrInvalidURL, k, u.Scheme, strings.Join(allowed, ", "))
		}
	}
	if u.Scheme == SchemeFile {
		if u.Host != "" {
			return nil, fmt.Errorf("%w: file:// URLs take an absolute path with no host, e.g. file:///var/lib/coredog/store", ErrInvalidURL)
		}
		if !path.IsAbs(u.Path) || path.Clean(u.Path) == "/" || hasDotSegment(u.Path) {
			return nil, fmt.Errorf("%w: file:// needs an absolute directory other than / without . or .. segments", ErrInvalidURL)
		}
		loc.Bucket = path.Clean(u.Path)
		return loc, nil
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: no bucket in %s:// URL", ErrInvalidURL, u.Scheme)
	}
	loc.Bucket = u.Host
	prefix := strings.Trim(u.Path, "/")
	if hasDotSegment(prefix) {
		return nil, fmt.Errorf("%w: the prefix must not contain . or .. segments", ErrInvalidURL)
	}
	if prefix != "" {
		loc.Prefix = prefix + "/"
	}
	return loc, nil
}

// BucketURL is the URL to open the bucket with (the prefix is applied to keys separately).
func (l *Location) BucketURL() string {
	u := url.URL{Scheme: l.Scheme, Host: l.Bucket, RawQuery: l.Query.Encode()}
	if l.Scheme == SchemeFile {
		u.Host, u.Path = "", l.Bucket
	}
	return u.String()
}

// ObjectURL is where an object with the given key (without prefix) is, for people.
func (l *Location) ObjectURL(key string) string {
	if l.Scheme == SchemeFile {
		return "file://" + path.Join(l.Bucket, l.Prefix, key)
	}
	return l.Scheme + "://" + l.Bucket + "/" + l.Prefix + key
}

// KeyOf is ObjectURL's inverse: the key (without the prefix) of the
// object that objectURL names in this location, or false when objectURL
// is not in it.
func (l *Location) KeyOf(objectURL string) (string, bool) {
	head := l.ObjectURL("")
	if l.Scheme == SchemeFile {
		// ObjectURL joins the key to the directory with a slash, which
		// path.Join drops from an empty key.
		head += "/"
	}
	key, ok := strings.CutPrefix(objectURL, head)
	if !ok || key == "" || l.ObjectURL(key) != objectURL {
		return "", false
	}
	return key, true
}

// StoredKey is the key (without the prefix) of an object recorded as
// stored at objectURL under fullKey (a CoreDump's status.storage url and
// key), or false when this location does not hold it: the policy's storage
// moved since.
func (l *Location) StoredKey(objectURL, fullKey string) (string, bool) {
	key, ok := l.KeyOf(objectURL)
	return key, ok && l.Prefix+key == fullKey
}

// LocationOf is the bucket, without prefix or options, that holds the
// object at objectURL (an ObjectURL) under fullKey, its key in the bucket
// with any prefix: for callers who know where an object is but not the
// storage URL it was written through.
func LocationOf(objectURL, fullKey string) (*Location, error) {
	scheme, rest, ok := strings.Cut(objectURL, "://")
	if !ok {
		return nil, fmt.Errorf("%w: %q is not an object URL", ErrInvalidURL, objectURL)
	}
	var bucketURL string
	if scheme == SchemeFile {
		dir, ok := strings.CutSuffix(rest, "/"+fullKey)
		if !ok || dir == "" {
			return nil, fmt.Errorf("%w: %s does not end in its key %s", ErrInvalidURL, objectURL, fullKey)
		}
		bucketURL = "file://" + dir
	} else {
		host, _, _ := strings.Cut(rest, "/")
		bucketURL = scheme + "://" + host
	}
	loc, err := ParseURL(bucketURL)
	if err != nil {
		return nil, err
	}
	if key, ok := loc.KeyOf(objectURL); !ok || key != fullKey {
		return nil, fmt.Errorf("%w: %s does not end in its key %s", ErrInvalidURL, objectURL, fullKey)
	}
	return loc, nil
}

func hasDotSegment(p string) bool {
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

func contains(list []string, s string) bool {
	return slices.Contains(list, s)
}
