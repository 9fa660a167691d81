package storage

// GCS is spoken to through its JSON API by the small client in gcs*.go, not
// through cloud.google.com/go/storage: that SDK links gRPC, xDS and
// OpenTelemetry, whose package initialisation and type data made the
// manager touch about 11 MiB more of its binary at start, for a dozen REST
// calls. What is used of the API: resumable and multipart uploads, object
// metadata (Size), media downloads (Read), deletes, V4 signed URLs and the
// IAM Credentials signBlob method.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

const (
	gcsDefaultEndpoint = "https://storage.googleapis.com"
	// gcsScope is what every request needs; signBlob asks for gcsIAMScope
	// with its own token, so that storage tokens stay narrow.
	gcsScope    = "https://www.googleapis.com/auth/devstorage.read_write"
	gcsIAMScope = "https://www.googleapis.com/auth/cloud-platform"
	// gcsMaxAttempts bounds the tries of one request or one chunk; retries
	// wait gcsBackoff, doubled each time up to gcsMaxBackoff, with jitter:
	// about 20 s in all, which outlasts the usual burst of 503s, and is
	// cheaper than the controller's retry of the whole dump.
	gcsMaxAttempts = 8
	gcsBackoff     = 250 * time.Millisecond
	gcsMaxBackoff  = 8 * time.Second
	// gcsErrorBodyLimit is how much of an error response is read for its message.
	gcsErrorBodyLimit = 64 << 10
	// gcsCleanupTimeout bounds cancelling an upload session after a failed
	// write, whose own context may be done.
	gcsCleanupTimeout = 30 * time.Second
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

// gcsStore is a Store on a GCS bucket through the JSON API.
type gcsStore struct {
	loc *Location
	// endpoint is scheme://host[/path] of the JSON API, the upload API and
	// signed URLs, without a trailing slash.
	endpoint *url.URL
	// client adds the OAuth2 token (none when anonymous) and follows no
	// redirects: a 308 is the resumable-upload protocol's answer.
	client *http.Client
	signer *gcsSigner
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
		signer.iam = &gcsIAM{endpoint: gcsIAMEndpoint, creds: func(ctx context.Context) (*http.Client, error) {
			gc, err := iamCreds(ctx)
			if err != nil {
				return nil, err
			}
			return gcsHTTPClient(gc.TokenSource), nil
		}}
	}
	return &gcsStore{loc: loc, endpoint: endpoint, client: gcsHTTPClient(ts), signer: signer, backoff: gcsBackoff}, nil
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
	c := &http.Client{
		Transport: gcsTransport(),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	if ts != nil {
		c.Transport = &oauth2.Transport{Source: ts, Base: gcsTransport()}
	}
	return c
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

// apiURL is the JSON API URL of an object (api "storage") or of the
// bucket's object collection for uploads (api "upload", name "").
func (s *gcsStore) apiURL(api, name string, query url.Values) string {
	var b strings.Builder
	b.WriteString(s.endpoint.Scheme + "://" + s.endpoint.Host + s.endpoint.EscapedPath())
	if api == "upload" {
		b.WriteString("/upload")
	}
	b.WriteString("/storage/v1/b/" + gcsEscape(s.loc.Bucket, false) + "/o")
	if name != "" {
		b.WriteString("/" + gcsEscape(name, false))
	}
	if len(query) > 0 {
		b.WriteString("?" + query.Encode())
	}
	return b.String()
}

func (s *gcsStore) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	if err := checkMetadata(opts.Metadata); err != nil {
		return 0, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	meta := gcsObjectMeta{Name: s.loc.Prefix + key, ContentType: opts.ContentType, Metadata: opts.Metadata}
	if meta.ContentType == "" {
		meta.ContentType = "application/octet-stream"
	}
	n, err := s.upload(ctx, CtxReader{Ctx: ctx, R: r}, meta, partSizeFor(opts.SizeHint))
	if err != nil {
		return n, fmt.Errorf("writing %s: %w", s.loc.ObjectURL(key), err)
	}
	return n, nil
}

func (s *gcsStore) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return err
	}
	if err := s.deleteObject(ctx, s.loc.Prefix+key, ""); err != nil {
		return fmt.Errorf("deleting %s: %w", s.loc.ObjectURL(key), err)
	}
	return nil
}

// deleteObject deletes name, or only its given generation; a missing object
// is not an error.
func (s *gcsStore) deleteObject(ctx context.Context, name, generation string) error {
	var q url.Values
	if generation != "" {
		q = url.Values{"generation": {generation}}
	}
	resp, err := s.do(ctx, func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodDelete, s.apiURL("storage", name, q), nil)
	})
	if statusCode(err) == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

func (s *gcsStore) Size(ctx context.Context, key string) (int64, error) {
	if err := checkKey(key); err != nil {
		return 0, err
	}
	resp, err := s.do(ctx, func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, s.apiURL("storage", s.loc.Prefix+key, url.Values{"fields": {"size"}}), nil)
	})
	if err != nil {
		return 0, s.readError(key, err)
	}
	var o gcsObject
	err = decodeJSON(resp, &o)
	if err != nil {
		return 0, s.readError(key, err)
	}
	n, err := strconv.ParseInt(o.Size, 10, 64)
	if err != nil {
		return 0, s.readError(key, fmt.Errorf("the object's size %q is not a number", o.Size))
	}
	return n, nil
}

func (s *gcsStore) Read(ctx context.Context, key string) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, err
	}
	resp, err := s.do(ctx, func() (*http.Request, error) {
		return http.NewRequestWithContext(ctx, http.MethodGet, s.apiURL("storage", s.loc.Prefix+key, url.Values{"alt": {"media"}}), nil)
	})
	if err != nil {
		return nil, s.readError(key, err)
	}
	return &gcsReader{ReadCloser: resp.Body, contentType: resp.Header.Get("Content-Type")}, nil
}

// gcsReader is an object's content with the type it was stored with.
type gcsReader struct {
	io.ReadCloser
	contentType string
}

// ContentType is the object's Content-Type, as gocloud's blob.Reader has it.
func (r *gcsReader) ContentType() string { return r.contentType }

func (s *gcsStore) SignedURL(ctx context.Context, key string, expiry time.Duration) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	if expiry <= 0 || expiry > MaxSignedURLExpiry {
		return "", fmt.Errorf("signing %s: expiry %s is not between 0 and %s", s.loc.ObjectURL(key), expiry, MaxSignedURLExpiry)
	}
	u, err := s.signer.signedURL(ctx, s.endpoint, s.loc.Bucket, s.loc.Prefix+key, expiry, time.Now())
	if err != nil {
		return "", fmt.Errorf("signing %s: %w", s.loc.ObjectURL(key), err)
	}
	return u, nil
}

// Close releases nothing: connections belong to the shared transport.
func (s *gcsStore) Close() error { return nil }

func (s *gcsStore) readError(key string, err error) error {
	if statusCode(err) == http.StatusNotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, s.loc.ObjectURL(key))
	}
	return fmt.Errorf("reading %s: %w", s.loc.ObjectURL(key), err)
}

// do sends the request newReq makes, again after transient failures (429,
// 5xx, 408, broken connections), and returns a 2xx or 3xx response. Other
// answers become a *gcsStatusError. newReq must give a request with a fresh
// body each time.
func (s *gcsStore) do(ctx context.Context, newReq func() (*http.Request, error)) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		req, err := newReq()
		if err != nil {
			return nil, err
		}
		resp, err := s.send(req)
		if err == nil {
			return resp, nil
		}
		if !retryable(ctx, err) || attempt >= gcsMaxAttempts {
			return nil, err
		}
		if err := s.sleep(ctx, attempt); err != nil {
			return nil, err
		}
	}
}

// send makes one round trip and turns answers other than 2xx and 3xx into
// errors.
func (s *gcsStore) send(req *http.Request) (*http.Response, error) {
	resp, err := s.client.Do(req)
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			// The message names the OAuth2 error, never the response body.
			return nil, fmt.Errorf("%w: getting an access token for bucket %q: %s %s", ErrCredentials, s.loc.Bucket, re.ErrorCode, re.ErrorDescription)
		}
		return nil, err
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	return nil, s.statusError(resp)
}

// sleep waits before the given retry, or until ctx is done.
func (s *gcsStore) sleep(ctx context.Context, attempt int) error {
	d := min(s.backoff<<min(attempt-1, 16), gcsMaxBackoff)
	// Half fixed, half random, so that uploads that failed together do
	// not retry together.
	d = d/2 + rand.N(d/2+1)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
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

// statusCode is the HTTP status of a *gcsStatusError in err's chain, or 0.
func statusCode(err error) int {
	var se *gcsStatusError
	if errors.As(err, &se) {
		return se.code
	}
	return 0
}

// retryable tells transient failures (rate limits, server errors, broken
// connections) from answers that will not change.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, ErrCredentials) || errors.Is(err, errGCSProtocol) {
		return false
	}
	var se *gcsStatusError
	if errors.As(err, &se) {
		return se.code == http.StatusRequestTimeout || se.code == http.StatusTooManyRequests || se.code >= 500
	}
	// Everything else failed on the way: connection refused or reset,
	// timeouts, a response cut short.
	return true
}

// errGCSProtocol marks answers that break the upload protocol; retrying
// them would not help.
var errGCSProtocol = errors.New("unexpected answer from GCS")

// statusError reads GCS's message from an error response and closes it.
// Refusals name the bucket and what the identity needs, and wrap
// ErrCredentials.
func (s *gcsStore) statusError(resp *http.Response) error {
	se := readStatusError(resp)
	switch se.code {
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: GCS did not accept the credentials for bucket %q: %w", ErrCredentials, s.loc.Bucket, se)
	case http.StatusForbidden:
		return fmt.Errorf("%w: GCS %w to bucket %q; the identity needs roles/storage.objectUser (object create, get and delete) on it: %w",
			ErrCredentials, ErrAccessDenied, s.loc.Bucket, se)
	}
	return se
}

// readStatusError reads the message of a Google API error response and
// closes it.
func readStatusError(resp *http.Response) *gcsStatusError {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, gcsErrorBodyLimit))
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(body, &e) == nil {
		msg = e.Error.Message
	}
	if msg == "" {
		msg = strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200] + "..."
		}
	}
	return &gcsStatusError{code: resp.StatusCode, message: msg}
}

// drain reads what is left of a response so that its connection is reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, gcsErrorBodyLimit))
	resp.Body.Close()
}

// decodeJSON reads a JSON response into v and closes it.
func decodeJSON(resp *http.Response, v any) error {
	defer drain(resp)
	body, err := io.ReadAll(io.LimitReader(resp.Body, gcsErrorBodyLimit))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(bytes.TrimSpace(body), v); err != nil {
		return fmt.Errorf("%w: HTTP %d with a body that is not the expected JSON: %v", errGCSProtocol, resp.StatusCode, err)
	}
	return nil
}

// gcsObject is the part of GCS's object resource that is read.
type gcsObject struct {
	Name       string `json:"name"`
	Generation string `json:"generation"`
	Size       string `json:"size"`
	CRC32C     string `json:"crc32c"`
}

// gcsObjectMeta is the object resource sent when an upload starts.
type gcsObjectMeta struct {
	Name        string            `json:"name"`
	ContentType string            `json:"contentType"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// CRC32C, when set, makes GCS refuse content that does not match.
	CRC32C string `json:"crc32c,omitempty"`
}

// gcsEscape percent-encodes everything but RFC 3986's unreserved characters
// (and '/' when keepSlash), as V4 signing requires and as object names in
// JSON API paths must be.
func gcsEscape(s string, keepSlash bool) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || c == '/' && keepSlash {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&15])
	}
	return b.String()
}
