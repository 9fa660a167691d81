package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// The fake S3 server runs in a child process (this test binary again), so
// that the objects it keeps in memory do not count against the client's
// heap, which TestS3Store measures.
const (
	fakeS3Env    = "COREDOG_STORAGE_TEST_FAKES3"
	fakeS3Bucket = "cores"
	// Uploads whose key contains failOnceMarker get their first UploadPart
	// answered with a 500.
	failOnceMarker = "retry-once"
	statsPath      = "/-/stats"
)

func TestMain(m *testing.M) {
	if os.Getenv(fakeS3Env) != "" {
		serveFakeS3()
		return
	}
	os.Exit(m.Run())
}

func serveFakeS3() {
	backend := s3mem.New()
	if err := backend.CreateBucket(fakeS3Bucket); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	faker := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog()))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("http://%s\n", l.Addr())
	// The parent closes stdin when it is done, or dies.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	_ = http.Serve(l, &partFailer{next: faker.Server(), failed: map[string]bool{}, keyIDs: map[string]bool{}})
	os.Exit(1)
}

// partFailer counts UploadPart requests, and answers the first one of
// marked uploads with a 500, as S3 does now and then.
// It also records the access key IDs that signed requests, which gofakes3
// accepts without checking.
type partFailer struct {
	next            http.Handler
	mu              sync.Mutex
	failed          map[string]bool
	keyIDs          map[string]bool
	parts, injected atomic.Int64
}

func (p *partFailer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == statsPath {
		p.mu.Lock()
		ids := slices.Sorted(maps.Keys(p.keyIDs))
		p.mu.Unlock()
		if len(ids) == 0 {
			ids = []string{"-"} // keeps the three fields scannable
		}
		fmt.Fprintf(w, "%d %d %s", p.parts.Load(), p.injected.Load(), strings.Join(ids, ","))
		return
	}
	// Authorization: AWS4-HMAC-SHA256 Credential=<key id>/<date>/..., ...
	if _, cred, ok := strings.Cut(r.Header.Get("Authorization"), "Credential="); ok {
		id, _, _ := strings.Cut(cred, "/")
		p.mu.Lock()
		p.keyIDs[id] = true
		p.mu.Unlock()
	}
	q := r.URL.Query()
	id := q.Get("uploadId")
	isPart := r.Method == http.MethodPut && id != "" && q.Get("partNumber") != ""
	if isPart {
		p.parts.Add(1)
	}
	if isPart && strings.Contains(r.URL.Path, failOnceMarker) {
		p.mu.Lock()
		first := !p.failed[id]
		p.failed[id] = true
		p.mu.Unlock()
		if first {
			p.injected.Add(1)
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInternalServerError)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code><Message>injected by the test</Message></Error>`)
			return
		}
	}
	p.next.ServeHTTP(w, r)
}

// startFakeS3 starts the server process and returns its endpoint.
func startFakeS3(t *testing.T) string { return startChildServer(t, fakeS3Env, "fake S3") }

// serverStats returns how many UploadPart requests the server saw, how
// many of them it failed on purpose, and which access key IDs signed.
func serverStats(t *testing.T, endpoint string) (parts, injected int, keyIDs string) {
	t.Helper()
	resp, err := http.Get(endpoint + statsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if _, err := fmt.Sscan(string(b), &parts, &injected, &keyIDs); err != nil {
		t.Fatalf("stats %q: %v", b, err)
	}
	return parts, injected, strings.TrimPrefix(keyIDs, "-")
}

// rawS3 is the SDK client behind a store, to look where Store does not.
func rawS3(t *testing.T, s Store) *s3.Client {
	t.Helper()
	ss, ok := s.(*s3Store)
	if !ok {
		t.Fatalf("%T is not an S3 store", s)
	}
	return ss.client
}

func TestS3Store(t *testing.T) {
	endpoint := startFakeS3(t)
	// The process environment holds other keys, and no shared config or
	// instance metadata to fall back on: a Secret's keys must win, and the
	// default chain must find these.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAFROMENVIRONMENT")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "environment-secret")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent/coredog-test")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/coredog-test")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	creds := map[string][]byte{
		KeyAWSAccessKeyID: []byte("AKIACOREDOGTEST"),
		// Secrets made with echo end in a newline; it must not reach the signer.
		KeyAWSSecretAccessKey: []byte("coredog-test-secret-key\n"),
	}
	query := "?region=us-east-1&use_path_style=true&endpoint=" + url.QueryEscape(endpoint)
	s := mustOpen(t, mustParse(t, "s3://"+fakeS3Bucket+"/prod/eu"+query), creds)
	ctx := context.Background()

	t.Run("40 MiB multipart round trip", func(t *testing.T) {
		partsBefore, _, _ := serverStats(t, endpoint)
		// The part buffers live outside the heap, which grows by little
		// else: the SDK's transfer manager grew the live heap by 25 MiB here.
		partsHeld.resetPeak()
		if grew := checkRoundTrip(t, s, "team-a/db-0/core.zst", 40*mib); grew > 2*mib {
			t.Errorf("the live heap grew by %.1f MiB; want at most 2 MiB", float64(grew)/mib)
		}
		// One part and the next one's read-ahead.
		if peak := partsHeld.resetPeak(); peak != minPartSize+s3SmallRead {
			t.Errorf("the write held %.1f MiB of part buffers at most, want %d MiB", float64(peak)/mib, (minPartSize+s3SmallRead)/mib)
		}
		if parts, _, _ := serverStats(t, endpoint); parts-partsBefore != 40/5 {
			t.Errorf("40 MiB went up in %d parts, want %d of 5 MiB", parts-partsBefore, 40/5)
		}
		// The prefix is part of the stored key.
		plain := mustOpen(t, mustParse(t, "s3://"+fakeS3Bucket+query), creds)
		if n, err := plain.Size(ctx, "prod/eu/team-a/db-0/core.zst"); err != nil || n != 40*mib {
			t.Fatalf("the object is not under the prefix: %d, %v", n, err)
		}
		out, err := rawS3(t, s).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(fakeS3Bucket), Key: aws.String("prod/eu/team-a/db-0/core.zst")})
		if err != nil {
			t.Fatal(err)
		}
		if got := out.Metadata["coredump"]; got != "cd-1" {
			t.Errorf("metadata coredump = %q, want cd-1", got)
		}
	})
	t.Run("part and read-ahead boundaries", func(t *testing.T) {
		// A part, the next part's read-ahead (s3SmallRead), and the rest of
		// that part: the object ends at or around each boundary.
		for _, size := range []int64{minPartSize - 1, minPartSize, minPartSize + 1, minPartSize + s3SmallRead,
			minPartSize + s3SmallRead + 1, 2 * minPartSize, 2*minPartSize + s3SmallRead - 1} {
			partsBefore, _, _ := serverStats(t, endpoint)
			checkRoundTrip(t, s, fmt.Sprintf("sizes/%d", size), size)
			want := int((size + minPartSize - 1) / minPartSize)
			if size < minPartSize {
				want = 0 // one PutObject
			}
			if parts, _, _ := serverStats(t, endpoint); parts-partsBefore != want {
				t.Errorf("%d bytes went up in %d parts, want %d", size, parts-partsBefore, want)
			}
		}
	})
	t.Run("aborted writes", func(t *testing.T) {
		checkAborts(t, s, func(t *testing.T, key string) []string {
			out, err := rawS3(t, s).ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(fakeS3Bucket)})
			// gofakes3 answers NoSuchUpload for a bucket that never had one.
			var apiErr smithy.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode() == "NoSuchUpload" {
				return nil
			}
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, u := range out.Uploads {
				left = append(left, "unfinished multipart upload of "+aws.ToString(u.Key))
			}
			return left
		})
	})
	t.Run("delete", func(t *testing.T) { checkDelete(t, s) })
	t.Run("a dead attempt's multipart upload is aborted by the next write", func(t *testing.T) {
		raw := rawS3(t, s)
		start := func(key string) string {
			t.Helper()
			full := aws.String("prod/eu/" + key)
			up, err := raw.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(fakeS3Bucket), Key: full})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := raw.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(fakeS3Bucket), Key: full, UploadId: up.UploadId,
				PartNumber: aws.Int32(1), Body: bytes.NewReader(make([]byte, 5*mib))}); err != nil {
				t.Fatal(err)
			}
			return aws.ToString(up.UploadId)
		}
		dead := start("team-a/stale/core.zst")
		other := start("team-a/stale/core.zst.other")
		if _, err := s.Write(ctx, "team-a/stale/core.zst", newGenReader(mib, 9), WriteOptions{}); err != nil {
			t.Fatalf("Write: %v", err)
		}
		out, err := raw.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(fakeS3Bucket), Prefix: aws.String("prod/eu/team-a/stale/")})
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, u := range out.Uploads {
			left = append(left, aws.ToString(u.UploadId))
		}
		if slices.Contains(left, dead) {
			t.Errorf("the dead upload of the key is still open")
		}
		if !slices.Contains(left, other) {
			t.Errorf("the upload of another key was aborted too")
		}
	})
	t.Run("a part that fails once is retried", func(t *testing.T) {
		partsBefore, injectedBefore, _ := serverStats(t, endpoint)
		src := newGenReader(17*mib, 3)
		if _, err := s.Write(ctx, failOnceMarker+"/core.zst", src, WriteOptions{}); err != nil {
			t.Fatalf("Write: %v", err)
		}
		parts, injected, _ := serverStats(t, endpoint)
		if injected-injectedBefore != 1 || parts-partsBefore != 4+1 {
			t.Fatalf("the server saw %d part uploads and failed %d; want 4 parts plus 1 retry, 1 failed",
				parts-partsBefore, injected-injectedBefore)
		}
		if n, err := s.Size(ctx, failOnceMarker+"/core.zst"); err != nil || n != 17*mib {
			t.Fatalf("Size = %d, %v", n, err)
		}
	})
	t.Run("with AWS's checksums", func(t *testing.T) {
		// Against AWS (no endpoint=) the SDK sends CRC32 checksums with
		// the data, and a multipart upload names its algorithm and lists
		// each part's checksum on completion.
		raw := rawS3(t, s)
		up := &s3Store{loc: &Location{Scheme: SchemeS3, Bucket: fakeS3Bucket}, client: s3.New(raw.Options(), func(o *s3.Options) {
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenSupported
		}), checksum: types.ChecksumAlgorithmCrc32}
		for _, size := range []int64{3 * mib, 12 * mib} {
			key := fmt.Sprintf("prod/eu/crc/%d", size)
			src := newGenReader(size, 5)
			if n, err := up.write(ctx, key, src, &WriteOptions{SizeHint: size, ContentType: "application/zstd", Metadata: map[string]string{"coredump": "cd 2/é"}}); err != nil || n != size {
				t.Fatalf("write of %d bytes: %d, %v", size, n, err)
			}
			out, err := raw.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(fakeS3Bucket), Key: aws.String(key)})
			if err != nil {
				t.Fatal(err)
			}
			h := sha256.New()
			_, err = io.Copy(h, out.Body)
			out.Body.Close()
			if err != nil || hex.EncodeToString(h.Sum(nil)) != src.hex() {
				t.Fatalf("%d bytes read back differ: %v", size, err)
			}
			if got := out.Metadata["coredump"]; got != url.PathEscape("cd 2/é") {
				t.Errorf("metadata stored as %q, want it escaped as gocloud does", got)
			}
		}
	})
	t.Run("a Secret's keys sign, not the environment's", func(t *testing.T) {
		if _, _, ids := serverStats(t, endpoint); ids != "AKIACOREDOGTEST" {
			t.Fatalf("requests were signed by %q, want only the Secret's AKIACOREDOGTEST", ids)
		}
	})
	t.Run("default chain", func(t *testing.T) {
		d := mustOpen(t, mustParse(t, "s3://"+fakeS3Bucket+"/default"+query), nil)
		if _, err := d.Write(ctx, "k.json", strings.NewReader("{}"), WriteOptions{ContentType: "application/json"}); err != nil {
			t.Fatalf("Write: %v", err)
		}
		if _, _, ids := serverStats(t, endpoint); !strings.Contains(ids, "AKIAFROMENVIRONMENT") {
			t.Fatalf("without a Secret, requests were signed by %q, want the environment's key too", ids)
		}
	})
}

// S3's refusals (401, 403) wrap ErrCredentials, and 403 ErrAccessDenied,
// on every operation, and name the object.
func TestS3Refusals(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		code := int(status.Load())
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(code)
		if r.Method != http.MethodHead {
			name := map[int]string{http.StatusUnauthorized: "InvalidAccessKeyId", http.StatusForbidden: "AccessDenied"}[code]
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>refused by the test</Message></Error>`, name)
		}
	}))
	defer srv.Close()
	s := mustOpen(t, mustParse(t, "s3://cores/prod?region=us-east-1&use_path_style=true&endpoint="+url.QueryEscape(srv.URL)),
		secret(KeyAWSAccessKeyID, "AKIATEST", KeyAWSSecretAccessKey, "s"))
	checkRefusals(t, s, "s3://cores/prod/x/core.zst", func(code int) { status.Store(int32(code)) })
}

func TestS3PartSize(t *testing.T) {
	const gib = 1 << 30
	for _, tc := range []struct {
		name     string
		sizeHint int64
		// wantFirst and wantLate are the sizes of part 1 and of the first
		// part after fewParts/2.
		wantFirst, wantLate int
		maxParts            int
	}{
		{name: "unknown size", sizeHint: 0, wantFirst: minPartSize, wantLate: defaultPartSize, maxParts: maxParts},
		{name: "2 GiB", sizeHint: 2 * gib, wantFirst: minPartSize, wantLate: minPartSize, maxParts: fewParts},
		{name: "exactly 768 small parts", sizeHint: fewParts * minPartSize, wantFirst: minPartSize, wantLate: minPartSize, maxParts: fewParts},
		{name: "4 GiB and the encoder's margin", sizeHint: 4*gib + 17*mib, wantFirst: minPartSize, wantLate: 6 * mib, maxParts: fewParts},
		{name: "20 GiB", sizeHint: 20 * gib, wantFirst: minPartSize, wantLate: 49 * mib, maxParts: fewParts},
		// Parts never exceed maxPartSize, whatever size a CoreDump claims;
		// the largest object still fits S3's parts.
		{name: "MaxObjectSize", sizeHint: MaxObjectSize, wantFirst: minPartSize, wantLate: maxPartSize, maxParts: maxParts},
		{name: "a claimed 1 PiB", sizeHint: 1 << 50, wantFirst: minPartSize, wantLate: maxPartSize, maxParts: 1 << 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := s3PartSize(1, tc.sizeHint); got != tc.wantFirst {
				t.Errorf("part 1: %d MiB, want %d", got/mib, tc.wantFirst/mib)
			}
			if got := s3PartSize(fewParts/2+1, tc.sizeHint); got != tc.wantLate {
				t.Errorf("part %d: %d MiB, want %d", fewParts/2+1, got/mib, tc.wantLate/mib)
			}
			// An object of the whole size must fit in maxParts parts.
			size := tc.sizeHint
			if size == 0 {
				size = 77 * gib
			}
			var sum int64
			n := int32(0)
			for sum < size {
				n++
				sum += int64(s3PartSize(n, tc.sizeHint))
			}
			if int(n) > tc.maxParts {
				t.Errorf("%d bytes take %d parts, more than %d", size, n, tc.maxParts)
			}
		})
	}
}
