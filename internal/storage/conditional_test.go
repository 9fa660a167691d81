package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/coredog/coredog/test/localcluster"
)

// checkNeverReplaces is the attack of a forged CoreDump whose key is a
// victim's, at the store: the victim's object is written; then writes with
// IfAbsent to the same key, one in a single request and one large enough
// to go in parts, must fail with ErrExists and leave the victim's bytes and
// metadata as they were; Stat must report the victim's identity (keys in
// lower case, values as written) for the caller to compare before it
// deletes.
func checkNeverReplaces(t *testing.T, s Store, key string, large int64) {
	t.Helper()
	ctx := context.Background()
	victim := []byte("the victim's dump")
	md := map[string]string{MetadataCoreDump: "core-victim", MetadataNode: "node 1/é", MetadataCoreDumpUID: "7c9e-uid"}
	if _, err := s.Write(ctx, key, bytes.NewReader(victim), WriteOptions{Metadata: md, IfAbsent: true}); err != nil {
		t.Fatalf("writing the victim's object: %v", err)
	}
	forged := map[string]string{MetadataCoreDump: "core-forged", MetadataCoreDumpUID: "0000-forged"}
	for _, size := range []int64{64, large} {
		n, err := s.Write(ctx, key, newGenReader(size, 9), WriteOptions{Metadata: forged, IfAbsent: true, SizeHint: size})
		if !errors.Is(err, ErrExists) {
			t.Fatalf("a conditional write of %d bytes over the victim's object: %d bytes, %v; want ErrExists", size, n, err)
		}
	}
	rc, err := s.Read(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil || !bytes.Equal(got, victim) {
		t.Fatalf("the victim's object now reads %q (%v)", truncateBytes(got), err)
	}
	info, err := s.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(victim)) {
		t.Errorf("Stat size %d, want %d", info.Size, len(victim))
	}
	for k, v := range md {
		if info.Metadata[k] != v {
			t.Errorf("Stat metadata %s = %q, want %q (all: %v)", k, info.Metadata[k], v, info.Metadata)
		}
	}
	if _, err := s.Stat(ctx, key+"-none"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat of a missing key: %v, want ErrNotFound", err)
	}
	// Without IfAbsent a write still replaces (the sidecar of gocloud's
	// callers, the demo): conditional writes are asked for, not imposed.
	if _, err := s.Write(ctx, key, strings.NewReader("replaced"), WriteOptions{}); err != nil {
		t.Fatalf("an unconditional write: %v", err)
	}
}

func truncateBytes(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

func TestFileStoreNeverReplaces(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, mustParse(t, "file://"+dir+"/prod"), nil)
	checkNeverReplaces(t, s, "team-a/db-0/core-victim.zst", 12*mib)
	entries, err := os.ReadDir(filepath.Join(dir, "prod", "team-a", "db-0"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("a refused write left %s", e.Name())
		}
	}

	t.Run("metadata=skip", func(t *testing.T) {
		s := mustOpen(t, mustParse(t, "file://"+t.TempDir()+"?metadata=skip"), nil)
		ctx := context.Background()
		if _, err := s.Write(ctx, "k", strings.NewReader("victim"), WriteOptions{IfAbsent: true}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(ctx, "k", strings.NewReader("forged"), WriteOptions{IfAbsent: true}); !errors.Is(err, ErrExists) {
			t.Fatalf("got %v, want ErrExists", err)
		}
	})

	t.Run("attributes a dead write left are taken over", func(t *testing.T) {
		root := t.TempDir()
		s := mustOpen(t, mustParse(t, "file://"+root), nil)
		if err := os.WriteFile(filepath.Join(root, "k.attrs"), []byte(`{"user.metadata":{"coredump":"old"}}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Write(context.Background(), "k", strings.NewReader("x"), WriteOptions{IfAbsent: true, Metadata: map[string]string{MetadataCoreDump: "new"}}); err != nil {
			t.Fatal(err)
		}
		info, err := s.Stat(context.Background(), "k")
		if err != nil || info.Metadata[MetadataCoreDump] != "new" {
			t.Fatalf("Stat: %+v, %v", info, err)
		}
	})
}

func TestGCSStoreNeverReplaces(t *testing.T) {
	endpoint := startFakeGCS(t)
	creds := secret(KeyGCSCredentials, serviceAccountJSON(t, "service_account", map[string]string{"token_uri": endpoint + gcsTokenPath}))
	s := mustOpen(t, mustParse(t, "gs://"+fakeGCSBucket+"/cond?endpoint="+url.QueryEscape(endpoint)), creds)
	s.(*gcsStore).backoff = time.Millisecond
	checkNeverReplaces(t, s, "team-a/db-0/core-victim.zst", 12*mib)
}

func TestAzureStoreNeverReplaces(t *testing.T) {
	_, s := openFakeAzure(t, "/cond")
	checkNeverReplaces(t, s, "team-a/db-0/core-victim.zst", 12*mib)
}

// TestS3StoreNeverReplaces runs against versitygw, the S3 server of the
// end-to-end tests, which evaluates If-None-Match on PutObject and on
// CompleteMultipartUpload under its per-key publish lock (gofakes3 does
// not on the latter). The refused multipart upload must be aborted.
func TestS3StoreNeverReplaces(t *testing.T) {
	out, err := exec.Command(filepath.Join("..", "..", "hack", "versitygw.sh")).Output()
	if err != nil {
		t.Fatalf("hack/versitygw.sh builds the S3 server this test needs: %v", err)
	}
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "cores"), 0o700); err != nil {
		t.Fatal(err)
	}
	port, err := localcluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	const access, secretKey = "coredogtest", "coredog-test-secret"
	p, err := localcluster.StartVersityGW(t.TempDir(), strings.TrimSpace(string(out)), port, dir, access, secretKey, nil, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Kill)
	endpoint := "http://127.0.0.1:" + strconv.Itoa(port)
	s := mustOpen(t, mustParse(t, "s3://cores/cond?region=us-east-1&use_path_style=true&endpoint="+url.QueryEscape(endpoint)),
		map[string][]byte{KeyAWSAccessKeyID: []byte(access), KeyAWSSecretAccessKey: []byte(secretKey)})
	checkNeverReplaces(t, s, "team-a/db-0/core-victim.zst", 12*mib)
	ups, err := rawS3(t, s).ListMultipartUploads(context.Background(), &s3.ListMultipartUploadsInput{Bucket: aws.String("cores")})
	if err != nil {
		t.Fatal(err)
	}
	if len(ups.Uploads) != 0 {
		t.Errorf("the refused multipart upload was left open: %d uploads", len(ups.Uploads))
	}
}
