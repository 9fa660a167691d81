package storage

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// certDirChildEnv, set to an https S3 endpoint, makes
// TestStoresTrustCertDirectory write one object there and nothing else: it
// is the child process the test starts.
const certDirChildEnv = "COREDOG_TEST_CERT_DIR_ENDPOINT"

// TestStoresTrustCertDirectory: the chart's manager.storageCA mounts a
// ConfigMap of certificate authorities and names it in SSL_CERT_DIR, and the
// stores' clients then trust them on top of the system roots. Go reads the
// roots once per process, so the write runs in a child process, once with
// the directory and once without.
func TestStoresTrustCertDirectory(t *testing.T) {
	if endpoint := os.Getenv(certDirChildEnv); endpoint != "" {
		s := mustOpen(t, mustParse(t, "s3://"+fakeS3Bucket+"?region=us-east-1&use_path_style=true&endpoint="+url.QueryEscape(endpoint)),
			secret(KeyAWSAccessKeyID, "AKIATEST", KeyAWSSecretAccessKey, "s"))
		if _, err := s.Write(context.Background(), "ca/core.zst", strings.NewReader("dump"), WriteOptions{ContentType: "application/zstd"}); err != nil {
			t.Fatal(err)
		}
		return
	}
	backend := s3mem.New()
	if err := backend.CreateBucket(fakeS3Bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(backend, gofakes3.WithLogger(gofakes3.DiscardLog())).Server())
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes
	srv.StartTLS()
	defer srv.Close()

	// A ConfigMap volume's layout: each key a symlink into ..data, itself a
	// symlink to the current timestamped directory.
	dir := t.TempDir()
	stamp := filepath.Join(dir, "..2026_11_28_02_00_00.000000001")
	if err := os.Mkdir(stamp, 0o755); err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(filepath.Join(stamp, "ca.crt"), caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"..data": filepath.Base(stamp), "ca.crt": "..data/ca.crt"} {
		if err := os.Symlink(target, filepath.Join(dir, link)); err != nil {
			t.Fatal(err)
		}
	}

	child := func(certDir string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestStoresTrustCertDirectory$", "-test.v")
		cmd.Env = append(os.Environ(), certDirChildEnv+"="+srv.URL, "SSL_CERT_FILE=/nonexistent/coredog-test", "SSL_CERT_DIR="+certDir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := child(dir); err != nil {
		t.Fatalf("with SSL_CERT_DIR=%s the write failed: %v\n%s", dir, err, out)
	}
	if n, err := backend.HeadObject(fakeS3Bucket, "ca/core.zst"); err != nil || n.Size != 4 {
		t.Fatalf("the object is not there: %+v, %v", n, err)
	}
	out, err := child(t.TempDir())
	if err == nil || !strings.Contains(out, "certificate") {
		t.Fatalf("without the CA the write was not refused for its certificate: %v\n%s", err, out)
	}
}
