package storage

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

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
	signer := gcsSigner{accessID: opts.GoogleAccessID, privateKey: opts.PrivateKey}
	if creds != nil && signer.accessID == "" {
		// The Secret's service-account key signs, as it authenticates.
		var sa struct {
			ClientEmail string `json:"client_email"`
			PrivateKey  string `json:"private_key"`
		}
		if err := json.Unmarshal(creds[KeyGCSCredentials], &sa); err == nil {
			signer.accessID, signer.privateKey = sa.ClientEmail, []byte(sa.PrivateKey)
		}
	}
	return &bucketStore{bucket: bucket, sign: func(ctx context.Context, fullKey string, expiry time.Duration) (string, error) {
		var c *gcs.Client
		if !bucket.As(&c) || c == nil {
			return "", errors.New("gcsblob did not expose its client")
		}
		return signer.sign(c.Bucket(loc.Bucket), fullKey, expiry)
	}}, nil
}

// gcsSigner makes V4 signed URLs: with a private key when one is known
// (the Secret's service-account key, or access_id and private_key_path),
// otherwise through the IAM signBlob API as the service account that
// access_id names or the metadata server reports (Workload Identity; the
// account needs roles/iam.serviceAccountTokenCreator on itself).
type gcsSigner struct {
	accessID   string
	privateKey []byte
}

func (g gcsSigner) sign(b *gcs.BucketHandle, fullKey string, expiry time.Duration) (string, error) {
	return b.SignedURL(fullKey, &gcs.SignedURLOptions{
		Scheme:         gcs.SigningSchemeV4,
		Method:         http.MethodGet,
		Expires:        time.Now().Add(expiry),
		GoogleAccessID: g.accessID,
		PrivateKey:     g.privateKey,
	})
}
