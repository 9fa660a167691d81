package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

// TestFetchFromS3 downloads through the real S3 client from an S3 protocol
// server, with credentials from the caller's environment.
func TestFetchFromS3(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("cores"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	keyIDs := map[string]bool{}
	fake := gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, cred, ok := strings.Cut(r.Header.Get("Authorization"), "Credential="); ok {
			id, _, _ := strings.Cut(cred, "/")
			mu.Lock()
			keyIDs[id] = true
			mu.Unlock()
		}
		fake.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	bucketURL := "s3://cores?endpoint=" + url.QueryEscape(srv.URL) + "&use_path_style=true&region=us-east-1"
	dump := bytes.Repeat([]byte("core "), 300000)
	key := "prod/team-a/web-0/core-s3.zst"
	loc, err := storage.ParseURL(bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	writer, err := storage.Open(ctx, loc, map[string][]byte{storage.KeyAWSAccessKeyID: []byte("controller"), storage.KeyAWSSecretAccessKey: []byte("s")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writer.Write(ctx, key, bytes.NewReader(compressed(t, coredogv1.CompressionZstd, dump)), storage.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	writer.Close()
	mu.Lock()
	clear(keyIDs) // the controller's write
	mu.Unlock()

	cd := testDump("core-s3", time.Minute, func(cd *coredogv1.CoreDump) {
		cd.Spec.Size = int64(len(dump))
		cd.Status.Storage = &coredogv1.StorageStatus{URL: "s3://cores/" + key, Key: key, Compression: coredogv1.CompressionZstd, SHA256: sum(dump)}
	})
	env := map[string]string{storage.KeyAWSAccessKeyID: "plugin-user", storage.KeyAWSSecretAccessKey: "secret"}
	var stdout, stderr bytes.Buffer
	a := &app{stdout: &stdout, stderr: &stderr, now: time.Now, getenv: func(k string) string { return env[k] },
		isTerminal: func(io.Writer) bool { return false }, openStore: storage.Open}

	dir := t.TempDir()
	// The policy's URL carries the prefix; the key in the status already holds it.
	target := filepath.Join(dir, "core")
	if _, err := a.fetchDump(ctx, &cd, downloadOptions{output: target, storageURL: "s3://cores/prod?endpoint=" + url.QueryEscape(srv.URL) + "&use_path_style=true&region=us-east-1"}); err != nil {
		t.Fatal(err)
	}
	checkFile(t, target, dump)
	mu.Lock()
	if len(keyIDs) != 1 || !keyIDs["plugin-user"] {
		t.Errorf("requests were signed by %v, want the caller's plugin-user", keyIDs)
	}
	mu.Unlock()

	// Half a key pair fails before any request.
	delete(env, storage.KeyAWSSecretAccessKey)
	_, err = a.fetchDump(ctx, &cd, downloadOptions{output: filepath.Join(dir, "again"), storageURL: bucketURL})
	if !errors.Is(err, errNoCredentials) || !strings.Contains(err.Error(), "AWS_SECRET_ACCESS_KEY is not") {
		t.Errorf("half-set credentials: %v", err)
	}

	// An object that is gone.
	env[storage.KeyAWSSecretAccessKey] = "secret"
	gone := cd.DeepCopy()
	gone.Status.Storage.Key, gone.Status.Storage.URL = "prod/nope.zst", "s3://cores/prod/nope.zst"
	_, err = a.fetchDump(ctx, gone, downloadOptions{output: filepath.Join(dir, "gone"), storageURL: bucketURL})
	if err == nil || !strings.Contains(err.Error(), "is gone from storage") {
		t.Errorf("missing object: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files left behind: %v", entries)
	}
}
