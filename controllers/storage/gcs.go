package storage

import (
	"context"
	"fmt"
	"os"
	"strconv"

	gcs "cloud.google.com/go/storage"
	"gocloud.dev/blob/gcsblob"
	"gocloud.dev/gcp"
	"golang.org/x/oauth2/google"
)

func openGCS(ctx context.Context, loc *Location, creds map[string][]byte) (*bucketStore, error) {
	q := loc.Query
	anonymous := false
	if v := q.Get("anonymous"); v != "" {
		x, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: anonymous=%q is not true or false", ErrInvalidURL, v)
		}
		anonymous = x
	}
	var client *gcp.HTTPClient
	switch {
	case creds != nil && anonymous:
		return nil, fmt.Errorf("%w: anonymous= cannot be combined with a Secret", ErrInvalidURL)
	case creds != nil:
		// CheckCredentials vetted the key; the type is pinned again here
		// because the library would otherwise follow whatever the file says.
		gc, err := google.CredentialsFromJSONWithType(ctx, creds[KeyGCSCredentials], google.ServiceAccount, gcs.ScopeReadWrite)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCredentials, KeyGCSCredentials, err)
		}
		if client, err = gcp.NewHTTPClient(gcp.DefaultTransport(), gcp.CredentialsTokenSource(gc)); err != nil {
			return nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
		}
	case anonymous:
		client = gcp.NewAnonymousHTTPClient(gcp.DefaultTransport())
	default:
		gc, err := google.FindDefaultCredentials(ctx, gcs.ScopeReadWrite)
		if err != nil {
			return nil, fmt.Errorf("finding Google default credentials (Workload Identity, metadata server): %w", err)
		}
		if client, err = gcp.NewHTTPClient(gcp.DefaultTransport(), gcp.CredentialsTokenSource(gc)); err != nil {
			return nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
		}
	}
	// access_id and private_key_path only serve signed URLs; they are passed
	// on as gcsblob's own URL opener does.
	opts := &gcsblob.Options{GoogleAccessID: q.Get("access_id")}
	if path := q.Get("private_key_path"); path != "" {
		pk, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("reading private_key_path: %w", err)
		}
		opts.PrivateKey = pk
	}
	bucket, err := gcsblob.OpenBucket(ctx, client, loc.Bucket, opts)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
	}
	return &bucketStore{bucket: bucket}, nil
}
