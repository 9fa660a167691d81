package storage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestGCSStore(t *testing.T) {
	endpoint := startFakeGCS(t)
	tokenURI := map[string]string{"token_uri": endpoint + gcsTokenPath}
	creds := secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", tokenURI)+"\n")
	// Default credentials, for the tests without a Secret: another account.
	envKey := filepath.Join(t.TempDir(), "adc.json")
	if err := os.WriteFile(envKey, []byte(serviceAccountJSON(t, "service_account",
		map[string]string{"token_uri": endpoint + gcsTokenPath, "client_email": "env@p.iam.gserviceaccount.com"})), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", envKey)
	query := "?endpoint=" + url.QueryEscape(endpoint)
	s := mustOpen(t, mustParse(t, "gs://"+fakeGCSBucket+"/prod/eu"+query), creds)
	s.(*gcsStore).backoff = time.Millisecond
	ctx := context.Background()

	t.Run("40 MiB round trip in chunks", func(t *testing.T) {
		checkRoundTrip(t, s, "team-a/db-0/core.zst", 40*mib)
		st := fakeStats(t, endpoint).session(t, "prod/eu/team-a/db-0/core.zst")
		if want := []int64{8 * mib, 8 * mib, 8 * mib, 8 * mib, 8 * mib}; !slices.Equal(st.Chunks, want) || !st.Done {
			t.Errorf("chunks %v (done %v), want %v", st.Chunks, st.Done, want)
		}
		// The prefix is part of the stored name; metadata is kept.
		plain := mustOpen(t, mustParse(t, "gs://"+fakeGCSBucket+query), creds)
		if n, err := plain.Size(ctx, "prod/eu/team-a/db-0/core.zst"); err != nil || n != 40*mib {
			t.Fatalf("the object is not under the prefix: %d, %v", n, err)
		}
		o, err := s.(*gcsStore).bucket().Object("prod/eu/team-a/db-0/core.zst").Attrs(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if o.ContentType != "application/zstd" || o.Metadata["coredump"] != "cd-1" {
			t.Errorf("content type %q, metadata %v", o.ContentType, o.Metadata)
		}
	})
	t.Run("chunk size from SizeHint", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			size   int64
			hint   int64
			chunks []int64 // nil: one request, no session
		}{
			{name: "12 MiB", size: 12 * mib, hint: 12 * mib, chunks: []int64{5 * mib, 5 * mib, 2 * mib}},
			{name: "two chunks exactly", size: 10 * mib, hint: 10 * mib, chunks: []int64{5 * mib, 5 * mib}},
			{name: "one chunk and a byte", size: 5*mib + 1, hint: 6 * mib, chunks: []int64{5 * mib, 1}},
			{name: "one chunk exactly", size: 5 * mib, hint: 5 * mib},
			{name: "small", size: 10 << 10},
			{name: "just past the small read", size: gcsSmallRead + 1},
		} {
			t.Run(tc.name, func(t *testing.T) {
				key := "hint/" + strings.ReplaceAll(tc.name, " ", "-")
				src := newGenReader(tc.size, 4)
				if n, err := s.Write(ctx, key, src, WriteOptions{SizeHint: tc.hint, ContentType: "application/zstd"}); err != nil || n != tc.size {
					t.Fatalf("Write = %d, %v", n, err)
				}
				st := fakeStats(t, endpoint)
				if tc.chunks == nil {
					if n := st.sessionsOf("prod/eu/" + key); n != 0 {
						t.Errorf("%d upload sessions for an object that fits one request", n)
					}
				} else if got := st.session(t, "prod/eu/"+key).Chunks; !slices.Equal(got, tc.chunks) {
					t.Errorf("chunks %v, want %v", got, tc.chunks)
				}
				checkContent(t, s, key, src.hex(), "application/zstd")
			})
		}
	})
	t.Run("aborted writes", func(t *testing.T) {
		// The SDK abandons a failed upload's session rather than cancel it:
		// it holds no object, and GCS drops it within a week without
		// charge. What must not be left is a completed one.
		checkAborts(t, s, func(t *testing.T, key string) []string {
			var left []string
			for _, ss := range fakeStats(t, endpoint).Sessions {
				if ss.Name == "prod/eu/"+key && ss.Done {
					left = append(left, "a completed upload session")
				}
			}
			return left
		})
	})
	t.Run("delete", func(t *testing.T) { checkDelete(t, s) })
	t.Run("transient failures are retried", func(t *testing.T) {
		for _, tc := range []struct {
			marker string
			// chunks stored and queries made
			chunks  []int64
			queries int
		}{
			// The SDK sends a failed chunk again rather than asking the
			// session where it stands; the fake takes a chunk it already
			// holds as GCS does.
			{marker: gcsFailChunk, chunks: []int64{8 * mib, 8 * mib, 1 * mib}},
			{marker: gcsLoseReply, chunks: []int64{8 * mib, 8 * mib, 1 * mib}},
			{marker: gcsLoseFinal, chunks: []int64{8 * mib, 8 * mib, 1 * mib}},
		} {
			t.Run(tc.marker, func(t *testing.T) {
				key := tc.marker + "/core.zst"
				src := newGenReader(17*mib, 3)
				if _, err := s.Write(ctx, key, src, WriteOptions{}); err != nil {
					t.Fatalf("Write: %v", err)
				}
				st := fakeStats(t, endpoint).session(t, "prod/eu/"+key)
				if st.Injected != 1 || st.Queries != tc.queries || !slices.Equal(st.Chunks, tc.chunks) {
					t.Errorf("session: %d failures injected, %d status queries, chunks %v; want 1, %d, %v",
						st.Injected, st.Queries, st.Chunks, tc.queries, tc.chunks)
				}
				checkContent(t, s, key, src.hex(), "application/octet-stream")
			})
		}
	})
	t.Run("cancelled while the last chunk completes the object", func(t *testing.T) {
		// The object exists once the last chunk is stored, whether or not
		// its answer arrives; a write that then fails must remove it.
		key := gcsHangFinal + "/core.zst"
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := s.Write(wctx, key, newGenReader(9*mib, 5), WriteOptions{})
			done <- err
		}()
		for !slices.ContainsFunc(fakeStats(t, endpoint).Sessions, func(ss frontSession) bool { return ss.Name == "prod/eu/"+key && ss.Done }) {
			select {
			case err := <-done:
				t.Fatalf("Write returned before the last chunk was stored: %v", err)
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Write error = %v, want context.Canceled", err)
		}
		if _, err := s.Size(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Fatalf("after a cancelled write, Size error = %v, want ErrNotFound", err)
		}
	})
	t.Run("a failure that persists gives up", func(t *testing.T) {
		b := mustOpen(t, mustParse(t, "gs://"+gcsBrokenBucket+query), creds)
		b.(*gcsStore).backoff = time.Millisecond
		before := fakeStats(t, endpoint).Broken
		err := b.Delete(ctx, "k")
		if err == nil || !strings.Contains(err.Error(), "HTTP 503: Backend Error") {
			t.Fatalf("Delete: %v", err)
		}
		if n := fakeStats(t, endpoint).Broken - before; n != gcsMaxAttempts {
			t.Errorf("%d requests, want %d", n, gcsMaxAttempts)
		}
	})
	t.Run("refusals name the bucket", func(t *testing.T) {
		for _, tc := range []struct{ bucket, status string }{
			{gcsForbiddenBucket, "HTTP 403"},
			{gcsUnauthBucket, "HTTP 401: Invalid Credentials"},
		} {
			f := mustOpen(t, mustParse(t, "gs://"+tc.bucket+query), creds)
			for name, op := range map[string]func() error{
				"write":  func() error { _, err := f.Write(ctx, "k", strings.NewReader("x"), WriteOptions{}); return err },
				"size":   func() error { _, err := f.Size(ctx, "k"); return err },
				"read":   func() error { _, err := f.Read(ctx, "k"); return err },
				"delete": func() error { return f.Delete(ctx, "k") },
			} {
				err := op()
				if !errors.Is(err, ErrCredentials) || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `bucket "`+tc.bucket+`"`) ||
					errors.Is(err, ErrAccessDenied) != (tc.status == "HTTP 403") ||
					!strings.Contains(err.Error(), tc.status) {
					t.Errorf("%s %s: %v", tc.bucket, name, err)
				}
			}
		}
	})
	t.Run("a Secret's key authenticates, not the environment's", func(t *testing.T) {
		st := fakeStats(t, endpoint)
		if !slices.Equal(st.Auth, []string{"coredog@p.iam.gserviceaccount.com"}) {
			t.Fatalf("requests authenticated as %v", st.Auth)
		}
		// The stores opened above (one per upload, in the manager) share
		// one token.
		if n := st.Tokens["coredog@p.iam.gserviceaccount.com"]; n != 1 {
			t.Errorf("%d tokens issued for the Secret's key, want 1", n)
		}
	})
	t.Run("default credentials", func(t *testing.T) {
		d := mustOpen(t, mustParse(t, "gs://"+fakeGCSBucket+"/default"+query), nil)
		if _, err := d.Write(ctx, "k.json", strings.NewReader("{}"), WriteOptions{ContentType: "application/json"}); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if got := fakeStats(t, endpoint).Auth; !slices.Contains(got, "env@p.iam.gserviceaccount.com") {
			t.Fatalf("without a Secret, requests authenticated as %v", got)
		}
	})
	t.Run("anonymous", func(t *testing.T) {
		a := mustOpen(t, mustParse(t, "gs://"+fakeGCSBucket+"/prod/eu"+query+"&anonymous=true"), nil)
		if n, err := a.Size(ctx, "team-a/db-0/core.zst"); err != nil || n != 40*mib {
			t.Fatalf("Size = %d, %v", n, err)
		}
		if got := fakeStats(t, endpoint).Auth; !slices.Contains(got, "anonymous") {
			t.Fatalf("requests authenticated as %v", got)
		}
		if _, err := a.SignedURL(ctx, "team-a/db-0/core.zst", time.Hour); !errors.Is(err, ErrSignedURLUnsupported) {
			t.Fatalf("SignedURL without a key: %v", err)
		}
	})
	t.Run("a signed URL fetches the object", func(t *testing.T) {
		data := "a core dump, compressed"
		if _, err := s.Write(ctx, "ns/pod/x y+1.zst", strings.NewReader(data), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		u, err := s.SignedURL(ctx, "ns/pod/x y+1.zst", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(u, endpoint+"/cores/prod/eu/ns/pod/x%20y%2B1.zst?") {
			t.Fatalf("signed URL %s", u)
		}
		verifyV4(t, u, &testRSAKey(t).PublicKey)
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || string(got) != data {
			t.Errorf("GET %d %q", resp.StatusCode, got)
		}
	})
}

// checkContent reads key back and compares its hash and content type.
func checkContent(t *testing.T, s Store, key, wantHex, contentType string) {
	t.Helper()
	r, err := s.Read(context.Background(), key)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	defer r.Close()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatalf("reading back: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != wantHex {
		t.Fatalf("SHA-256 read back %s, written %s", got, wantHex)
	}
	if ct, ok := r.(interface{ ContentType() string }); !ok || ct.ContentType() != contentType {
		t.Errorf("content type not kept (reader %T)", r)
	}
}

func TestGCSEndpoint(t *testing.T) {
	for _, tc := range []struct {
		in, want, wantErr string
	}{
		{in: "", want: "https://storage.googleapis.com"},
		{in: "http://127.0.0.1:4443", want: "http://127.0.0.1:4443"},
		{in: "gcs.example:4443", want: "https://gcs.example:4443"},
		{in: "https://gcs.example/prefix/", want: "https://gcs.example/prefix"},
		{in: "ftp://gcs.example", wantErr: "not an http(s) URL"},
		{in: "http://", wantErr: "not an http(s) URL"},
		{in: "http://user:pw@gcs.example", wantErr: "not an http(s) URL"},
		{in: "http://gcs.example?x=1", wantErr: "not an http(s) URL"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			u, err := gcsEndpoint(tc.in)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || u.String() != tc.want {
				t.Fatalf("gcsEndpoint(%q) = %v, %v; want %s", tc.in, u, err, tc.want)
			}
		})
	}
}

func TestOpenGCSOptions(t *testing.T) {
	dir := t.TempDir()
	pemPath := filepath.Join(dir, "key.pem")
	jsonPath := filepath.Join(dir, "key.json")
	badPath := filepath.Join(dir, "bad.pem")
	for p, v := range map[string]string{pemPath: testPrivateKey(), jsonPath: serviceAccountJSON(t, "service_account", nil), badPath: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"} {
		if err := os.WriteFile(p, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, url string
		wantErr   string
		is        error
		accessID  string // who signs, when Open succeeds with a key
	}{
		{name: "key file and access_id", url: "gs://b?anonymous=true&access_id=signer@p.iam.gserviceaccount.com&private_key_path=" + pemPath, accessID: "signer@p.iam.gserviceaccount.com"},
		{name: "JSON key file", url: "gs://b?anonymous=true&private_key_path=" + jsonPath, accessID: "coredog@p.iam.gserviceaccount.com"},
		{name: "missing key file", url: "gs://b?anonymous=true&private_key_path=" + filepath.Join(dir, "none"), wantErr: "reading private_key_path"},
		{name: "bad key file", url: "gs://b?anonymous=true&private_key_path=" + badPath, wantErr: "not a PKCS#8 or PKCS#1 private key", is: ErrCredentials},
		{name: "bad anonymous", url: "gs://b?anonymous=maybe", wantErr: `anonymous="maybe"`, is: ErrInvalidURL},
		{name: "bad endpoint", url: "gs://b?anonymous=true&endpoint=ftp://x", wantErr: "not an http(s) URL", is: ErrInvalidURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(context.Background(), mustParse(t, tc.url), nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || (tc.is != nil && !errors.Is(err, tc.is)) {
					t.Fatalf("Open error = %v, want one containing %q", err, tc.wantErr)
				}
				if s != nil {
					t.Fatalf("Open returned a store with its error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			g := s.(*gcsStore).signer
			if g.key == nil || g.accessID != tc.accessID {
				t.Fatalf("signer: key %v, access ID %q; want %q", g.key != nil, g.accessID, tc.accessID)
			}
		})
	}
}
