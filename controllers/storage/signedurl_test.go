package storage

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
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
