package storage

// GCS goes through Google's storage SDK (cloud.google.com/go/storage) and
// its HTTP/JSON client only: the client is given its HTTP client, which
// carries the token of the Secret's service-account key or of default
// credentials, so that the SDK never looks for credentials of its own.
// Reads use the JSON API too (WithJSONReads), so that one endpoint= serves
// every call.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"
	gcs "cloud.google.com/go/storage"
	"github.com/googleapis/gax-go/v2"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iamcredentials/v1"
	"google.golang.org/api/option"
)

const (
	gcsDefaultEndpoint = "https://storage.googleapis.com"
	// gcsScope is what every request needs; signBlob asks for gcsIAMScope
	// with its own token, so that storage tokens stay narrow.
	gcsScope    = "https://www.googleapis.com/auth/devstorage.read_write"
	gcsIAMScope = "https://www.googleapis.com/auth/cloud-platform"
	// gcsMaxAttempts bounds the tries of one request; retries wait
	// gcsBackoff, doubled each time up to gcsMaxBackoff, with jitter: about
	// 20 s in all, which outlasts the usual burst of 503s, and is cheaper
	// than the controller's retry of the whole dump. A chunk is retried for
	// at most gcsChunkRetryDeadline.
	gcsMaxAttempts        = 8
	gcsBackoff            = 250 * time.Millisecond
	gcsMaxBackoff         = 8 * time.Second
	gcsChunkRetryDeadline = 30 * time.Second
	// gcsErrorBodyLimit is how much of an error body becomes its message.
	gcsErrorBodyLimit = 200
	// gcsCleanupTimeout bounds removing what a failed write stored, whose
	// own context may be done.
	gcsCleanupTimeout = 30 * time.Second
	// gcsChunkAlign is the unit of resumable-upload chunks (the SDK
	// rounds chunk sizes up to it).
	gcsChunkAlign = googleapi.MinUploadChunkSize
	// gcsSmallRead is what a write reads before it picks a chunk size:
	// objects that end within it (the JSON sidecars) go up in one request
	// from a buffer of one gcsChunkAlign, not of a whole chunk.
	gcsSmallRead = 64 << 10
)

// gcsTransport is shared by all GCS stores: the manager opens a store per
// upload, and a shared pool keeps TLS connections to Google warm.
var gcsTransport = sync.OnceValue(func() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	// A chunk is answered as soon as it is stored; a connection that stays
	// silent this long is dead, and the chunk is retried.
	t.ResponseHeaderTimeout = 2 * time.Minute
	t.MaxIdleConnsPerHost = 8
	return t
})

// gcsStore is a Store on a GCS bucket.
type gcsStore struct {
	loc *Location
	// endpoint is scheme://host[/path] of the JSON API and of signed URLs,
	// without a trailing slash.
	endpoint *url.URL
	client   *gcs.Client
	signer   *gcsSigner
	// backoff is the first retry delay.
	backoff time.Duration
}

var _ Store = (*gcsStore)(nil)

func openGCS(ctx context.Context, loc *Location, creds map[string][]byte) (Store, error) {
	q := loc.Query
	anonymous := false
	if v := q.Get("anonymous"); v != "" {
		x, err := strconv.ParseBool(v)
		if err != nil {
			return nil, fmt.Errorf("%w: anonymous=%q is not true or false", ErrInvalidURL, v)
		}
		anonymous = x
	}
	endpoint, err := gcsEndpoint(q.Get("endpoint"))
	if err != nil {
		return nil, err
	}
	var (
		ts oauth2.TokenSource
		// keyJSON is the service-account key the store authenticates with,
		// when there is one: it also signs URLs.
		keyJSON []byte
		// iamCreds makes credentials with the IAM scope for signBlob.
		iamCreds func(ctx context.Context) (*google.Credentials, error)
	)
	switch {
	case creds != nil && anonymous:
		return nil, fmt.Errorf("%w: anonymous= cannot be combined with a Secret", ErrInvalidURL)
	case creds != nil:
		key := creds[KeyGCSCredentials]
		gc, err := gcsCredentials(key, gcsScope)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCredentials, KeyGCSCredentials, err)
		}
		ts, keyJSON = gc.TokenSource, key
		iamCreds = func(context.Context) (*google.Credentials, error) { return gcsCredentials(key, gcsIAMScope) }
	case anonymous:
	default:
		gc, err := gcsCredentials(nil, gcsScope)
		if err != nil {
			return nil, fmt.Errorf("finding Google default credentials (Workload Identity, metadata server): %w", err)
		}
		ts, keyJSON = gc.TokenSource, gc.JSON
		iamCreds = func(context.Context) (*google.Credentials, error) { return gcsCredentials(nil, gcsIAMScope) }
	}
	signer, err := newGCSSigner(q.Get("access_id"), q.Get("private_key_path"), keyJSON)
	if err != nil {
		return nil, err
	}
	if iamCreds != nil {
		signer.iam = &gcsIAM{creds: func(ctx context.Context) (*http.Client, error) {
			gc, err := iamCreds(ctx)
			if err != nil {
				return nil, err
			}
			return gcsHTTPClient(gc.TokenSource), nil
		}}
	}
	// WithoutAuthentication keeps the SDK from looking for default
	// credentials of its own (files, the metadata server) at each Open:
	// the HTTP client authenticates.
	client, err := gcs.NewClient(ctx,
		option.WithoutAuthentication(),
		option.WithHTTPClient(gcsHTTPClient(ts)),
		option.WithEndpoint(endpoint.String()+"/storage/v1/"),
		gcs.WithJSONReads())
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", loc.BucketURL(), err)
	}
	return &gcsStore{loc: loc, endpoint: endpoint, client: client, signer: signer, backoff: gcsBackoff}, nil
}

// gcsCreds keeps the credentials of Secrets' keys, and with them their
// tokens, across the stores the manager opens for each upload: without it
// every upload would fetch a token first. Entries are keyed by a hash of the
// key and the scope (a rotated key is a new entry); the map is emptied when
// it holds gcsMaxCachedCreds, which only many rotations reach. Default
// credentials are looked up each time, as they depend on the environment
// and files that may change; their tokens come from the metadata server.
var gcsCreds = struct {
	sync.Mutex
	m map[[sha256.Size]byte]*google.Credentials
}{m: map[[sha256.Size]byte]*google.Credentials{}}

const gcsMaxCachedCreds = 32

// gcsCredentials are the credentials of a service-account key, or the
// default credentials when key is nil, for scope. Tokens are fetched
// through the shared transport, with a context that outlives any caller's.
func gcsCredentials(key []byte, scope string) (*google.Credentials, error) {
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, &http.Client{Transport: gcsTransport()})
	if key == nil {
		return google.FindDefaultCredentials(ctx, scope)
	}
	id := sha256.Sum256(append([]byte(scope+"\x00"), key...))
	gcsCreds.Lock()
	defer gcsCreds.Unlock()
	if gc := gcsCreds.m[id]; gc != nil {
		return gc, nil
	}
	// CheckCredentials vetted the key; the type is pinned again here
	// because the library would otherwise follow whatever the file says.
	gc, err := google.CredentialsFromJSONWithType(ctx, key, google.ServiceAccount, scope)
	if err != nil {
		return nil, err
	}
	if len(gcsCreds.m) >= gcsMaxCachedCreds {
		clear(gcsCreds.m)
	}
	gcsCreds.m[id] = gc
	return gc, nil
}

// gcsHTTPClient authenticates with ts, or not at all when ts is nil.
func gcsHTTPClient(ts oauth2.TokenSource) *http.Client {
	if ts == nil {
		return &http.Client{Transport: gcsTransport()}
	}
	return &http.Client{Transport: &oauth2.Transport{Source: ts, Base: gcsTransport()}}
}

// gcsEndpoint checks the endpoint= option: an http(s) URL, https:// when
// it has no scheme, without query or fragment.
func gcsEndpoint(raw string) (*url.URL, error) {
	if raw == "" {
		raw = gcsDefaultEndpoint
	}
	if !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("%w: endpoint %q is not an http(s) URL of the form scheme://host[:port][/path]", ErrInvalidURL, raw)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

// bucket is the bucket with the store's retries: every call, writes
// included, is retried on 408, 429, 5xx and broken connections. A write
// may be retried because the key is fixed and the content is the same.
func (s *gcsStore) bucket() *gcs.BucketHandle {
	return s.client.Bucket(s.loc.Bucket).Retryer(
		gcs.WithPolicy(gcs.RetryAlways),
		gcs.WithMaxAttempts(gcsMaxAttempts),
		gcs.WithBackoff(gax.Backoff{Initial: s.backoff, Max: gcsMaxBackoff, Multiplier: 2}),
		gcs.WithErrorFunc(gcsRetryable),
	)
}

// gcsRetryable adds to the SDK's transient errors every request that
// failed on the way (a connection closed before the answer, say), but not
// a refused token or the caller's cancellation.
func gcsRetryable(err error) bool {
	if gcs.ShouldRetry(err) {
		return true
	}
	var ue *url.Error
	var re *oauth2.RetrieveError
	return errors.As(err, &ue) && !errors.As(err, &re) &&
		!errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

func (s *gcsStore) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error) {
	if err := checkWrite(s.loc, key, &opts); err != nil {
		return 0, err
	}
	n, err := s.upload(ctx, s.loc.Prefix+key, CtxReader{Ctx: ctx, R: r}, &opts)
	if gcsPreconditionFailed(err) {
		return n, fmt.Errorf("writing %s: %w: %w", s.loc.ObjectURL(key), ErrExists, s.mapError(err))
	}
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), s.mapError(err))
	}
	return n, nil
}

// gcsPreconditionFailed says whether err is GCS's 412 to a write whose
// generation precondition failed.
func gcsPreconditionFailed(err error) bool {
	se := statusError(err)
	return se != nil && se.code == http.StatusPreconditionFailed
}

// upload streams r into name. The SDK holds one chunk in memory; an object
// that ends within its first chunk goes up in one request.
func (s *gcsStore) upload(ctx context.Context, name string, r io.Reader, opts *WriteOptions) (written int64, err error) {
	// fill, not io.ReadFull: a truncated stream must fail the write.
	small := make([]byte, gcsSmallRead)
	n, end, err := fill(r, small)
	if err != nil {
		return 0, err
	}
	chunkSize := partSizeFor(opts.SizeHint)
	switch {
	case end:
		chunkSize = gcsChunkAlign
	case opts.SizeHint > 0 && opts.SizeHint <= int64(chunkSize):
		// The SDK sends an object in one request only when it ends within
		// the first chunk, which it must see end: one byte more than the
		// object, rounded up to the chunk unit, is enough.
		chunkSize = int((opts.SizeHint + gcsChunkAlign) / gcsChunkAlign * gcsChunkAlign)
	}
	// Cancelling wctx abandons the upload session without completing the
	// object: the SDK completes it only once Close sees the end of the data.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	obj := s.bucket().Object(name)
	if opts.IfAbsent {
		obj = obj.If(gcs.Conditions{DoesNotExist: true})
	}
	w := obj.NewWriter(wctx)
	w.ChunkSize = chunkSize
	w.ChunkRetryDeadline = gcsChunkRetryDeadline
	w.ContentType = opts.ContentType
	w.Metadata = opts.Metadata
	sum := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	dst := io.MultiWriter(w, sum)
	written, err = io.Copy(dst, io.MultiReader(bytes.NewReader(small[:n]), r))
	if err != nil {
		cancel()
		_ = w.Close()
		return written, err
	}
	if err := w.Close(); err != nil {
		if gcsPreconditionFailed(err) {
			// The object at name is someone else's, never to be removed.
			return written, err
		}
		// The last chunk may have completed the object though its answer
		// never came (or ctx ended meanwhile).
		s.removeIfOurs(ctx, name, written, sum.Sum32())
		return written, err
	}
	// GCS checked the CRC32C the SDK sent with the last chunk; what it
	// says it stored is checked against what was read here.
	if a := w.Attrs(); a.Size != written || a.CRC32C != sum.Sum32() {
		s.removeGeneration(ctx, name, a.Generation)
		return written, fmt.Errorf("GCS stored %d bytes with CRC32C %08x, but %d bytes with CRC32C %08x were sent", a.Size, a.CRC32C, written, sum.Sum32())
	}
	return written, nil
}

// removeGeneration deletes one generation of name, which a write stored
// but cannot vouch for.
func (s *gcsStore) removeGeneration(ctx context.Context, name string, generation int64) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gcsCleanupTimeout)
	defer cancel()
	_ = s.bucket().Object(name).Generation(generation).Delete(ctx) // The write fails anyway; its error says why.
}

// removeIfOurs deletes the object at name when it is what a failed write
// sent (its size and CRC32C), and only that generation, never a newer
// object at the key.
func (s *gcsStore) removeIfOurs(ctx context.Context, name string, size int64, crc uint32) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), gcsCleanupTimeout)
	defer cancel()
	a, err := s.bucket().Object(name).Attrs(ctx)
	if err != nil || a.Size != size || a.CRC32C != crc {
		return
	}
	s.removeGeneration(ctx, name, a.Generation)
}

func (s *gcsStore) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	err := s.bucket().Object(s.loc.Prefix + key).Delete(ctx)
	if err != nil && !errors.Is(err, gcs.ErrObjectNotExist) {
		return fmt.Errorf("deleting %s: %w", s.loc.ObjectURL(key), s.mapError(err))
	}
	return nil
}

func (s *gcsStore) Size(ctx context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	a, err := s.bucket().Object(s.loc.Prefix + key).Attrs(ctx)
	if err != nil {
		return 0, s.readError(key, err)
	}
	return a.Size, nil
}

func (s *gcsStore) Stat(ctx context.Context, key string) (*ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	a, err := s.bucket().Object(s.loc.Prefix + key).Attrs(ctx)
	if err != nil {
		return nil, s.readError(key, err)
	}
	return &ObjectInfo{Size: a.Size, Metadata: lowerKeys(a.Metadata, nil)}, nil
}

func (s *gcsStore) Read(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	r, err := s.bucket().Object(s.loc.Prefix + key).NewReader(ctx)
	if err != nil {
		return nil, s.readError(key, err)
	}
	return &objectReader{ReadCloser: r, contentType: r.Attrs.ContentType}, nil
}

func (s *gcsStore) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkSign(s.loc, key, expiry); err != nil {
		return "", err
	}
	u, err := s.signer.signedURL(ctx, s.endpoint, s.loc.Bucket, s.loc.Prefix+key, expiry)
	if err != nil {
		return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), err)
	}
	return u, nil
}

func (s *gcsStore) Close() error { return s.client.Close() }

func (s *gcsStore) readError(key string, err error) error {
	if errors.Is(err, gcs.ErrObjectNotExist) {
		return notFound(s.loc, key)
	}
	return fmt.Errorf("reading %s: %w", s.loc.ObjectURL(key), s.mapError(err))
}

// gcsStatusError is an HTTP answer GCS gave instead of the expected one.
type gcsStatusError struct {
	code    int
	message string
}

func (e *gcsStatusError) Error() string {
	if e.message == "" {
		return fmt.Sprintf("HTTP %d", e.code)
	}
	return fmt.Sprintf("HTTP %d: %s", e.code, e.message)
}

// statusError is the HTTP status and message of a Google API error in
// err's chain, or nil.
func statusError(err error) *gcsStatusError {
	var ge *googleapi.Error
	if !errors.As(err, &ge) {
		return nil
	}
	msg := ge.Message
	if msg == "" {
		// Media requests (reads) leave the JSON error body unparsed.
		var body struct {
			Error struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal([]byte(ge.Body), &body) == nil {
			msg = body.Error.Message
		}
	}
	if msg == "" {
		msg = strings.TrimSpace(ge.Body)
		if len(msg) > gcsErrorBodyLimit {
			msg = msg[:gcsErrorBodyLimit] + "..."
		}
	}
	return &gcsStatusError{code: ge.Code, message: msg}
}

// mapError says what an error of the SDK means: refusals name the bucket
// and what the identity needs, and wrap ErrCredentials; a failed token
// request names the OAuth2 error, never the response body.
func (s *gcsStore) mapError(err error) error {
	if re, ok := errors.AsType[*oauth2.RetrieveError](err); ok {
		return fmt.Errorf("%w: getting an access token for bucket %q: %s %s", ErrCredentials, s.loc.Bucket, re.ErrorCode, re.ErrorDescription)
	}
	se := statusError(err)
	if se == nil {
		return err
	}
	switch se.code {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: GCS did not accept the credentials for bucket %q: %w", ErrCredentials, s.loc.Bucket, se)
	case http.StatusForbidden:
		return fmt.Errorf("%w: GCS %w to bucket %q; the identity needs roles/storage.objectUser (object create, get and delete) on it: %w",
			ErrCredentials, ErrAccessDenied, s.loc.Bucket, se)
	}
	return se
}

// gcsSigner makes V4 signed URLs through the SDK: signed with a private key
// when one is known (the Secret's service-account key, a key file from
// default credentials, or access_id and private_key_path), otherwise
// through the IAM signBlob API as the service account that access_id names
// or the metadata server reports (Workload Identity; the account needs
// roles/iam.serviceAccountTokenCreator on itself).
type gcsSigner struct {
	accessID string
	key      *rsa.PrivateKey
	// iam signs without a key; nil when the store is anonymous.
	iam *gcsIAM
}

// gcsIAM calls signBlob, with a client made on first use: it needs a token
// with the cloud-platform scope, which storage requests do without.
type gcsIAM struct {
	// endpoint is the IAM Credentials API's, "" for Google's.
	endpoint string
	creds    func(ctx context.Context) (*http.Client, error)

	mu     sync.Mutex
	client *http.Client
}

// newGCSSigner reads the signing options: access_id, private_key_path (a
// PEM or DER RSA key, or a service-account JSON key file), and the JSON key
// the store authenticates with, if any.
func newGCSSigner(accessID, keyPath string, keyJSON []byte) (*gcsSigner, error) {
	g := &gcsSigner{accessID: accessID}
	if keyPath != "" {
		data, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, fmt.Errorf("reading private_key_path: %w", err)
		}
		email, key, err := parseSigningKey(data)
		if err != nil {
			return nil, fmt.Errorf("%w: private_key_path %s: %v", ErrCredentials, keyPath, err)
		}
		g.key = key
		if g.accessID == "" {
			g.accessID = email
		}
		return g, nil
	}
	if accessID != "" || len(keyJSON) == 0 {
		// An access_id without a key signs through IAM as that account.
		return g, nil
	}
	var sa serviceAccountKey
	if json.Unmarshal(keyJSON, &sa) != nil || sa.Type != "service_account" {
		return g, nil // user credentials and the like cannot sign; IAM may
	}
	_, key, err := parseSigningKey([]byte(sa.PrivateKey))
	if err != nil {
		return nil, fmt.Errorf("%w: the private_key of the service-account key: %v", ErrCredentials, err)
	}
	g.accessID, g.key = sa.ClientEmail, key
	return g, nil
}

// parseSigningKey reads an RSA private key in PEM or DER (PKCS#8 or
// PKCS#1), or a service-account JSON key file, whose email it also returns.
// Errors never quote the key.
func parseSigningKey(data []byte) (email string, key *rsa.PrivateKey, err error) {
	data = bytes.TrimSpace(data)
	if bytes.HasPrefix(data, []byte("{")) {
		var sa serviceAccountKey
		if err := json.Unmarshal(data, &sa); err != nil || sa.PrivateKey == "" {
			return "", nil, errors.New("a JSON key file without a private_key")
		}
		email, data = sa.ClientEmail, []byte(sa.PrivateKey)
	}
	if block, _ := pem.Decode(data); block != nil {
		data = block.Bytes
	}
	var parsed any
	if parsed, err = x509.ParsePKCS8PrivateKey(data); err != nil {
		if parsed, err = x509.ParsePKCS1PrivateKey(data); err != nil {
			return "", nil, errors.New("not a PKCS#8 or PKCS#1 private key")
		}
	}
	key, ok := parsed.(*rsa.PrivateKey)
	if !ok {
		return "", nil, fmt.Errorf("a %T, not an RSA key", parsed)
	}
	return email, key, nil
}

// signedURL signs a GET of bucket/name, path-style at endpoint, valid for
// expiry.
func (g *gcsSigner) signedURL(ctx context.Context, endpoint *url.URL, bucket, name string, expiry time.Duration) (string, error) {
	if endpoint.Path != "" {
		// The SDK signs /bucket/object at the host; a path before it would
		// not be in the signature.
		return "", fmt.Errorf("%w: the endpoint %s has a path", ErrSignedURLUnsupported, endpoint)
	}
	account, err := g.account(ctx)
	if err != nil {
		return "", err
	}
	sign := func(b []byte) ([]byte, error) {
		digest := sha256.Sum256(b)
		return rsa.SignPKCS1v15(nil, g.key, crypto.SHA256, digest[:])
	}
	if g.key == nil {
		sign = func(b []byte) ([]byte, error) { return g.iam.signBlob(ctx, account, b) }
	}
	return gcs.SignedURL(bucket, name, &gcs.SignedURLOptions{
		GoogleAccessID: account,
		SignBytes:      sign,
		Method:         http.MethodGet,
		// The SDK truncates the seconds it counts from its own clock,
		// read a moment later: half a second more keeps them whole.
		Expires:  time.Now().Add(expiry + time.Second/2),
		Scheme:   gcs.SigningSchemeV4,
		Hostname: endpoint.Host,
		Insecure: endpoint.Scheme == "http",
	})
}

// account is the service account that signs.
func (g *gcsSigner) account(ctx context.Context) (string, error) {
	if g.accessID != "" {
		if g.key == nil && g.iam == nil {
			return "", fmt.Errorf("%w: access_id without private_key_path, and no credentials to call IAM signBlob with (anonymous)", ErrSignedURLUnsupported)
		}
		return g.accessID, nil
	}
	if g.iam == nil {
		return "", fmt.Errorf("%w: anonymous access has no key to sign with; give access_id and private_key_path", ErrSignedURLUnsupported)
	}
	if !metadata.OnGCEWithContext(ctx) {
		return "", fmt.Errorf("%w: the credentials have no private key, and without a metadata server there is no service account to sign as; set access_id", ErrSignedURLUnsupported)
	}
	email, err := metadata.EmailWithContext(ctx, "default")
	if err != nil {
		return "", fmt.Errorf("asking the metadata server for the service account to sign as: %w", err)
	}
	return email, nil
}

// signBlob signs payload as account through the IAM Credentials API.
func (i *gcsIAM) signBlob(ctx context.Context, account string, payload []byte) ([]byte, error) {
	client, err := i.httpClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: credentials for IAM signBlob: %v", ErrSignedURLUnsupported, err)
	}
	opts := []option.ClientOption{option.WithHTTPClient(client)}
	if i.endpoint != "" {
		opts = append(opts, option.WithEndpoint(i.endpoint))
	}
	svc, err := iamcredentials.NewService(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("IAM signBlob as %s: %w", account, err)
	}
	resp, err := svc.Projects.ServiceAccounts.SignBlob("projects/-/serviceAccounts/"+account, &iamcredentials.SignBlobRequest{
		Payload: base64.StdEncoding.EncodeToString(payload),
	}).Context(ctx).Do()
	if err != nil {
		if se := statusError(err); se != nil {
			hint := ""
			if se.code == http.StatusForbidden || se.code == http.StatusUnauthorized {
				hint = fmt.Sprintf(" (%s needs roles/iam.serviceAccountTokenCreator on itself)", account)
			}
			return nil, fmt.Errorf("IAM signBlob as %s%s: %w", account, hint, se)
		}
		return nil, fmt.Errorf("IAM signBlob as %s: %w", account, err)
	}
	sig, err := base64.StdEncoding.DecodeString(resp.SignedBlob)
	if err != nil || len(sig) == 0 {
		return nil, fmt.Errorf("IAM signBlob as %s: signedBlob is not base64", account)
	}
	return sig, nil
}

func (i *gcsIAM) httpClient(ctx context.Context) (*http.Client, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.client == nil {
		c, err := i.creds(ctx)
		if err != nil {
			return nil, err
		}
		i.client = c
	}
	return i.client, nil
}
