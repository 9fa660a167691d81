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
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"
	"unicode"

	gcssdk "cloud.google.com/go/storage"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"golang.org/x/oauth2"
)

// The S3 flow for real: a presigned URL fetched with a plain GET, no
// credentials, returns the object.
func TestSignedURLS3(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("cores"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	t.Cleanup(srv.Close)
	loc, err := ParseURL("s3://cores/prod?region=eu-west-1&use_path_style=true&endpoint=" + srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	const secretKey = "s3cr3t-access-key"
	s, err := Open(context.Background(), loc, secret(KeyAWSAccessKeyID, "AKIATEST", KeyAWSSecretAccessKey, secretKey))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	data := []byte("a core dump, compressed")
	if _, err := s.Write(context.Background(), "ns/pod/x.zst", bytes.NewReader(data), WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	u, err := s.SignedURL(context.Background(), "ns/pod/x.zst", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := url.Parse(u)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	if pu.Path != "/cores/prod/ns/pod/x.zst" || q.Get("X-Amz-Expires") != "7200" || q.Get("X-Amz-Signature") == "" ||
		!strings.HasPrefix(q.Get("X-Amz-Credential"), "AKIATEST/") || strings.Contains(u, secretKey) {
		t.Errorf("presigned URL %s", u)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, data) {
		t.Errorf("GET %d %q", resp.StatusCode, got)
	}
}

func TestSignedURLGCSWithServiceAccountKey(t *testing.T) {
	loc, err := ParseURL("gs://cores/prod")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), loc, secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := s.SignedURL(context.Background(), "ns/pod/x.zst", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	q := pu.Query()
	if pu.Host != "storage.googleapis.com" || pu.Path != "/cores/prod/ns/pod/x.zst" || (q.Get("X-Goog-Expires") != "3600" && q.Get("X-Goog-Expires") != "3599") ||
		q.Get("X-Goog-Signature") == "" || !strings.HasPrefix(q.Get("X-Goog-Credential"), "coredog@p.iam.gserviceaccount.com/") {
		t.Errorf("signed URL %s", u)
	}
	verifyV4(t, u, &testRSAKey(t).PublicKey)
}

// The store signs with its key through the SDK's SignBytes hook; the URL
// must be the one the SDK makes from the key itself, which RSA PKCS#1 v1.5
// makes deterministic: same inputs, same URL.
func TestSignedURLGCSMatchesGoogleSDK(t *testing.T) {
	key := testRSAKey(t)
	g := &gcsSigner{accessID: "coredog@p.iam.gserviceaccount.com", key: key}
	ep, err := gcsEndpoint("")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"ns/pod/x.zst", "ns/pod/core dump+1~é(2)&=?.zst", "a//b/%41"} {
		t.Run(name, func(t *testing.T) {
			// X-Goog-Date has a resolution of a second: try again when the
			// two signings fell on either side of one.
			for try := 0; ; try++ {
				now := time.Now()
				ours, err := g.signedURL(context.Background(), ep, "cores", name, 2*time.Hour)
				if err != nil {
					t.Fatal(err)
				}
				theirs, err := gcssdk.SignedURL("cores", name, &gcssdk.SignedURLOptions{
					GoogleAccessID: g.accessID,
					PrivateKey:     []byte(testPrivateKey()),
					Method:         http.MethodGet,
					Expires:        now.Add(2*time.Hour + 500*time.Millisecond),
					Scheme:         gcssdk.SigningSchemeV4,
				})
				if err != nil {
					t.Fatal(err)
				}
				// Google's SDK puts X-Goog-Signature among the sorted
				// parameters, the documentation at the end: same URL.
				if sameURL(ours, theirs) {
					verifyV4(t, ours, &key.PublicKey)
					return
				}
				if try == 3 {
					t.Fatalf("signed URLs differ:\nours   %s\ntheirs %s", ours, theirs)
				}
			}
		})
	}
}

// Without a key, the string to sign goes to IAM's signBlob as the account
// that access_id names.
func TestSignedURLGCSThroughSignBlob(t *testing.T) {
	key := testRSAKey(t)
	var gotPath, gotAuth string
	iamServer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotPath, gotAuth = r.URL.EscapedPath(), r.Header.Get("Authorization")
		var in struct{ Payload string }
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if strings.Contains(gotPath, "denied") {
			http.Error(w, `{"error":{"code":403,"message":"Permission 'iam.serviceAccounts.signBlob' denied"}}`, http.StatusForbidden)
			return
		}
		payload, _ := base64.StdEncoding.DecodeString(in.Payload)
		digest := sha256.Sum256(payload)
		sig, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:])
		if err != nil {
			t.Error(err)
		}
		fmt.Fprintf(w, `{"keyId":"k1","signedBlob":%q}`, base64.StdEncoding.EncodeToString(sig))
	}))
	defer iamServer.Close()
	client := gcsHTTPClient(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "iam-token"}))
	g := &gcsSigner{accessID: "wi@p.iam.gserviceaccount.com", iam: &gcsIAM{endpoint: iamServer.URL + "/", creds: func(context.Context) (*http.Client, error) { return client, nil }}}
	ep, _ := gcsEndpoint("")
	u, err := g.signedURL(context.Background(), ep, "cores", "ns/pod/x.zst", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if gotPath != "/v1/projects/-/serviceAccounts/wi@p.iam.gserviceaccount.com:signBlob" || gotAuth != "Bearer iam-token" {
		t.Errorf("signBlob called at %s with %q", gotPath, gotAuth)
	}
	verifyV4(t, u, &key.PublicKey)
	g.accessID = "denied@p.iam.gserviceaccount.com"
	_, err = g.signedURL(context.Background(), ep, "cores", "ns/pod/x.zst", time.Hour)
	if err == nil || !strings.Contains(err.Error(), "roles/iam.serviceAccountTokenCreator") || !strings.Contains(err.Error(), "HTTP 403") {
		t.Errorf("signBlob refused: %v", err)
	}
}

// sameURL says whether a and b differ at most in the order of their query
// parameters.
func sameURL(a, b string) bool {
	ua, err1 := url.Parse(a)
	ub, err2 := url.Parse(b)
	if err1 != nil || err2 != nil {
		return false
	}
	qa, qb := ua.Query(), ub.Query()
	ua.RawQuery, ub.RawQuery = "", ""
	return ua.String() == ub.String() && reflect.DeepEqual(qa, qb)
}

// testRSAKey is testPrivateKey parsed.
func testRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	block, _ := pem.Decode([]byte(testPrivateKey()))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// verifyV4 checks a V4 signed GET URL as GCS would, following Google's
// description of the canonical request, independently of gcs_sign.go.
func verifyV4(t *testing.T, raw string, pub *rsa.PublicKey) {
	t.Helper()
	pu, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	sig, err := hex.DecodeString(q.Get("X-Goog-Signature"))
	if err != nil || len(sig) == 0 {
		t.Fatalf("X-Goog-Signature in %s", raw)
	}
	q.Del("X-Goog-Signature")
	if q.Get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" || q.Get("X-Goog-SignedHeaders") != "host" {
		t.Fatalf("algorithm or signed headers in %s", raw)
	}
	// RFC 3986 encoding: only unreserved characters stay.
	enc := func(s string) string {
		var b strings.Builder
		for _, c := range []byte(s) {
			if unicode.IsLetter(rune(c)) && c < 0x80 || unicode.IsDigit(rune(c)) || strings.IndexByte("-._~", c) >= 0 {
				b.WriteByte(c)
			} else {
				fmt.Fprintf(&b, "%%%02X", c)
			}
		}
		return b.String()
	}
	var params []string
	for k, vs := range q {
		for _, v := range vs {
			params = append(params, enc(k)+"="+enc(v))
		}
	}
	sort.Strings(params)
	segs := strings.Split(pu.Path, "/")
	for i := range segs {
		segs[i] = enc(segs[i])
	}
	// Google's SDK signs the host name without a port, which GCS's own
	// endpoints never have; only emulators' do.
	canonical := "GET\n" + strings.Join(segs, "/") + "\n" + strings.Join(params, "&") + "\nhost:" + pu.Hostname() + "\n\nhost\nUNSIGNED-PAYLOAD"
	cred := strings.SplitN(q.Get("X-Goog-Credential"), "/", 2)
	if len(cred) != 2 || !strings.HasPrefix(cred[1], q.Get("X-Goog-Date")[:8]+"/auto/storage/goog4_request") {
		t.Fatalf("credential scope in %s", raw)
	}
	h := sha256.Sum256([]byte(canonical))
	toSign := "GOOG4-RSA-SHA256\n" + q.Get("X-Goog-Date") + "\n" + cred[1] + "\n" + hex.EncodeToString(h[:])
	digest := sha256.Sum256([]byte(toSign))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("the signature of %s does not verify: %v", raw, err)
	}
	if pu.EscapedPath() != strings.Join(segs, "/") {
		t.Errorf("the URL's path %s is not encoded as signed (%s)", pu.EscapedPath(), strings.Join(segs, "/"))
	}
}

func TestSignedURLAzureWithAccountKey(t *testing.T) {
	loc, err := ParseURL("azblob://cores/prod?storage_account=coredogtest")
	if err != nil {
		t.Fatal(err)
	}
	key := base64.StdEncoding.EncodeToString([]byte("an azure account key of some length"))
	s, err := Open(context.Background(), loc, secret(KeyAzureKey, key))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	u, err := s.SignedURL(context.Background(), "ns/pod/x.zst", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pu, _ := url.Parse(u)
	q := pu.Query()
	if pu.Host != "coredogtest.blob.core.windows.net" || q.Get("sp") != "r" || q.Get("sig") == "" || q.Get("se") == "" || strings.Contains(u, key) {
		t.Errorf("SAS URL %s", u)
	}
	if got, _ := url.PathUnescape(pu.EscapedPath()); got != "/cores/prod/ns/pod/x.zst" {
		t.Errorf("path %s", got)
	}
}

func TestSignedURLRefusals(t *testing.T) {
	loc, err := ParseURL("file://" + t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), loc, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.SignedURL(context.Background(), "x.zst", time.Hour); !errors.Is(err, ErrSignedURLUnsupported) {
		t.Errorf("file://: %v, want ErrSignedURLUnsupported", err)
	}
	for _, tc := range []struct {
		key    string
		expiry time.Duration
	}{{"../x", time.Hour}, {"x", 0}, {"x", MaxSignedURLExpiry + time.Second}} {
		if _, err := s.SignedURL(context.Background(), tc.key, tc.expiry); err == nil || errors.Is(err, ErrSignedURLUnsupported) {
			t.Errorf("%q %v: %v", tc.key, tc.expiry, err)
		}
	}
}
