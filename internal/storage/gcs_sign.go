package storage

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/compute/metadata"
)

// V4 signed URLs, as documented in "V4 signing process with your own
// program" (https://cloud.google.com/storage/docs/access-control/signing-urls-manually):
// a canonical request of the GET, hashed into a string to sign, signed with
// RSA-SHA256 by the service account's key, or by IAM's signBlob when the
// store has no key.

const (
	gcsIAMEndpoint   = "https://iamcredentials.googleapis.com"
	gcsSignAlgorithm = "GOOG4-RSA-SHA256"
)

// gcsSigner makes V4 signed URLs: with a private key when one is known
// (the Secret's service-account key, a key file from default credentials,
// or access_id and private_key_path), otherwise through the IAM signBlob
// API as the service account that access_id names or the metadata server
// reports (Workload Identity; the account needs
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

// signedURL signs a GET of bucket/name at endpoint, valid from now for
// expiry.
func (g *gcsSigner) signedURL(ctx context.Context, endpoint *url.URL, bucket, name string, expiry time.Duration, now time.Time) (string, error) {
	account, err := g.account(ctx)
	if err != nil {
		return "", err
	}
	req := gcsV4Request(endpoint, bucket, name, account, expiry, now)
	var sig []byte
	if g.key != nil {
		digest := sha256.Sum256([]byte(req.stringToSign()))
		sig, err = rsa.SignPKCS1v15(nil, g.key, crypto.SHA256, digest[:])
	} else {
		sig, err = g.iam.signBlob(ctx, account, []byte(req.stringToSign()))
	}
	if err != nil {
		return "", err
	}
	return req.url(hex.EncodeToString(sig)), nil
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
	body, _ := json.Marshal(map[string]string{"payload": base64.StdEncoding.EncodeToString(payload)})
	u := i.endpoint + "/v1/projects/-/serviceAccounts/" + url.PathEscape(account) + ":signBlob"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("IAM signBlob as %s: %w", account, err)
	}
	if resp.StatusCode != http.StatusOK {
		se := readStatusError(resp)
		hint := ""
		if se.code == http.StatusForbidden || se.code == http.StatusUnauthorized {
			hint = fmt.Sprintf(" (%s needs roles/iam.serviceAccountTokenCreator on itself)", account)
		}
		return nil, fmt.Errorf("IAM signBlob as %s%s: %w", account, hint, se)
	}
	var out struct {
		SignedBlob string `json:"signedBlob"`
	}
	if err := decodeJSON(resp, &out); err != nil {
		return nil, fmt.Errorf("IAM signBlob as %s: %w", account, err)
	}
	sig, err := base64.StdEncoding.DecodeString(out.SignedBlob)
	if err != nil || len(sig) == 0 {
		return nil, fmt.Errorf("IAM signBlob as %s: %w: signedBlob is not base64", account, errGCSProtocol)
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

// gcsV4 is a GET to be signed.
type gcsV4 struct {
	scheme, host, path string
	query              url.Values
	timestamp, scope   string
}

// gcsV4Request describes a signed GET of bucket/name, path-style at
// endpoint, only the host header signed.
func gcsV4Request(endpoint *url.URL, bucket, name, account string, expiry time.Duration, now time.Time) *gcsV4 {
	now = now.UTC()
	date := now.Format("20060102")
	r := &gcsV4{
		scheme:    endpoint.Scheme,
		host:      endpoint.Host,
		path:      endpoint.EscapedPath() + "/" + gcsEscape(bucket, false) + "/" + gcsEscape(name, true),
		timestamp: now.Format("20060102T150405Z"),
		scope:     date + "/auto/storage/goog4_request",
	}
	r.query = url.Values{
		"X-Goog-Algorithm":     {gcsSignAlgorithm},
		"X-Goog-Credential":    {account + "/" + r.scope},
		"X-Goog-Date":          {r.timestamp},
		"X-Goog-Expires":       {strconv.FormatInt(int64(expiry/time.Second), 10)},
		"X-Goog-SignedHeaders": {"host"},
	}
	return r
}

// canonicalQuery sorts the parameters by name and percent-encodes names
// and values.
func (r *gcsV4) canonicalQuery() string {
	keys := make([]string, 0, len(r.query))
	for k := range r.query {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		for _, v := range r.query[k] {
			parts = append(parts, gcsEscape(k, false)+"="+gcsEscape(v, false))
		}
	}
	return strings.Join(parts, "&")
}

// canonicalRequest is method, path, query, headers, a blank line, the
// signed header names and the payload hash, one per line.
func (r *gcsV4) canonicalRequest() string {
	return strings.Join([]string{
		http.MethodGet,
		r.path,
		r.canonicalQuery(),
		"host:" + r.host + "\n",
		"host",
		"UNSIGNED-PAYLOAD",
	}, "\n")
}

func (r *gcsV4) stringToSign() string {
	h := sha256.Sum256([]byte(r.canonicalRequest()))
	return strings.Join([]string{gcsSignAlgorithm, r.timestamp, r.scope, hex.EncodeToString(h[:])}, "\n")
}

func (r *gcsV4) url(signature string) string {
	return r.scheme + "://" + r.host + r.path + "?" + r.canonicalQuery() + "&X-Goog-Signature=" + signature
}
