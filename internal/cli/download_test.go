package cli

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

func TestLocate(t *testing.T) {
	s3 := &coredogv1.StorageStatus{URL: "s3://cores/prod/ns/pod/k.zst", Key: "prod/ns/pod/k.zst"}
	// file:// URLs have no prefix: the whole path is the directory.
	file := &coredogv1.StorageStatus{URL: "file:///srv/store/prod/ns/pod/k.zst", Key: "ns/pod/k.zst"}
	for _, tc := range []struct {
		name       string
		st         *coredogv1.StorageStatus
		url        string
		wantBucket string
		wantQuery  string
		wantErr    error
		wantErrMsg string
	}{
		{name: "policy URL with prefix and options", st: s3, url: "s3://cores/prod?endpoint=https://minio:9000&use_path_style=true",
			wantBucket: "s3://cores?endpoint=https%3A%2F%2Fminio%3A9000&use_path_style=true"},
		{name: "bucket URL without prefix", st: s3, url: "s3://cores", wantBucket: "s3://cores"},
		{name: "file store stays read-only", st: file, url: "file:///srv/store/prod", wantBucket: "file:///srv/store/prod?create_dir=false"},
		{name: "another bucket", st: s3, url: "s3://elsewhere/prod", wantErr: errMoved},
		{name: "another scheme", st: s3, url: "gs://cores/prod", wantErr: errMoved},
		{name: "bad URL", st: s3, url: "ftp://cores", wantErrMsg: "storage URL"},
	} {
		loc, key, err := Locate(tc.st, tc.url)
		if tc.wantErr != nil || tc.wantErrMsg != "" {
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) || tc.wantErrMsg != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErrMsg)) {
				t.Errorf("%s: error %v, want %v %q", tc.name, err, tc.wantErr, tc.wantErrMsg)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got := loc.BucketURL(); got != tc.wantBucket || key != tc.st.Key || loc.Prefix != "" {
			t.Errorf("%s: bucket %s, key %s, prefix %q; want %s, %s, \"\"", tc.name, got, key, loc.Prefix, tc.wantBucket, tc.st.Key)
		}
	}
}

func TestLocateFromObjectURL(t *testing.T) {
	for _, tc := range []struct {
		url, key, want string
		wantErr        bool
	}{
		{url: "s3://cores/prod/ns/pod/k.zst", key: "prod/ns/pod/k.zst", want: "s3://cores"},
		{url: "gs://cores/k.gz", key: "k.gz", want: "gs://cores"},
		{url: "file:///srv/store/prod/k.zst", key: "k.zst", want: "file:///srv/store/prod?create_dir=false"},
		{url: "s3://cores/other/k.zst", key: "prod/k.zst", wantErr: true},
		{url: "file:///k.zst", key: "k.zst", wantErr: true},
		{url: "ftp://cores/k.zst", key: "k.zst", wantErr: true},
	} {
		loc, key, err := LocateFromObjectURL(&coredogv1.StorageStatus{URL: tc.url, Key: tc.key})
		if tc.wantErr {
			if err == nil {
				t.Errorf("%s: no error", tc.url)
			}
			continue
		}
		if err != nil || loc.BucketURL() != tc.want || key != tc.key {
			t.Errorf("%s: %v, %q, %v; want %s, %s", tc.url, loc, key, err, tc.want, tc.key)
		}
	}
}

func TestCredsFromEnv(t *testing.T) {
	for _, tc := range []struct {
		name    string
		scheme  string
		env     map[string]string
		want    map[string]string
		wantErr string
	}{
		{name: "s3 default chain", scheme: "s3", env: map[string]string{"AWS_PROFILE": "dev"}},
		{name: "s3 keys", scheme: "s3", env: map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"},
			want: map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"}},
		{name: "s3 session", scheme: "s3", env: map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok"},
			want: map[string]string{"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "tok"}},
		{name: "s3 half", scheme: "s3", env: map[string]string{"AWS_ACCESS_KEY_ID": "id"}, wantErr: "AWS_SECRET_ACCESS_KEY is not"},
		{name: "s3 other half", scheme: "s3", env: map[string]string{"AWS_SECRET_ACCESS_KEY": "s"}, wantErr: "AWS_ACCESS_KEY_ID is not"},
		{name: "azure connection string", scheme: "azblob", env: map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "cs", "AZURE_STORAGE_KEY": "k"},
			want: map[string]string{"AZURE_STORAGE_CONNECTION_STRING": "cs"}},
		{name: "azure key", scheme: "azblob", env: map[string]string{"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"},
			want: map[string]string{"AZURE_STORAGE_ACCOUNT": "acct", "AZURE_STORAGE_KEY": "k"}},
		{name: "azure default", scheme: "azblob", env: map[string]string{"AZURE_STORAGE_ACCOUNT": "acct"}},
		{name: "gcs always default", scheme: "gs", env: map[string]string{"AWS_ACCESS_KEY_ID": "id", "GOOGLE_APPLICATION_CREDENTIALS": "/k.json"}},
		{name: "file", scheme: "file", env: map[string]string{"AWS_ACCESS_KEY_ID": "id"}},
	} {
		got, err := CredsFromEnv(tc.scheme, func(k string) string { return tc.env[k] })
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, errNoCredentials) {
				t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if (got == nil) != (tc.want == nil) || len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			continue
		}
		for k, v := range tc.want {
			if string(got[k]) != v {
				t.Errorf("%s: %s = %q, want %q", tc.name, k, got[k], v)
			}
		}
	}
}

func compressed(t *testing.T, c coredogv1.Compression, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	switch c {
	case coredogv1.CompressionZstd:
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
	case coredogv1.CompressionGzip:
		w := gzip.NewWriter(&b)
		w.Write(data)
		w.Close()
	default:
		b.Write(data)
	}
	return b.Bytes()
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestCopyVerified(t *testing.T) {
	dump := bytes.Repeat([]byte("\x7fELF core memory "), 10000)
	for _, c := range []coredogv1.Compression{coredogv1.CompressionZstd, coredogv1.CompressionGzip, coredogv1.CompressionNone} {
		stored := compressed(t, c, dump)
		for _, raw := range []bool{false, true} {
			var out bytes.Buffer
			res, err := copyVerified(&out, bytes.NewReader(stored), c, raw)
			if err != nil {
				t.Fatalf("%s raw=%v: %v", c, raw, err)
			}
			want := dump
			if raw {
				want = stored
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Errorf("%s raw=%v: wrote %d bytes, want %d", c, raw, out.Len(), len(want))
			}
			if res.sha256 != sum(dump) || res.rawSize != int64(len(dump)) || res.stored != int64(len(stored)) || res.written != int64(len(want)) {
				t.Errorf("%s raw=%v: transfer %+v", c, raw, res)
			}
		}
	}
	// Corrupt objects fail as such.
	for _, c := range []coredogv1.Compression{coredogv1.CompressionZstd, coredogv1.CompressionGzip} {
		stored := compressed(t, c, dump)
		bad := append([]byte(nil), stored[:len(stored)/2]...)
		if _, err := copyVerified(&bytes.Buffer{}, bytes.NewReader(bad), c, false); !errors.Is(err, errCorrupt) {
			t.Errorf("%s truncated: error %v, want errCorrupt", c, err)
		}
		if _, err := copyVerified(&bytes.Buffer{}, strings.NewReader("not compressed at all"), c, true); !errors.Is(err, errCorrupt) {
			t.Errorf("%s garbage: error %v, want errCorrupt", c, err)
		}
	}
}

func TestCheckIntegrity(t *testing.T) {
	good := transfer{rawSize: 100, sha256: "ab12"}
	for _, tc := range []struct {
		name    string
		st      coredogv1.StorageStatus
		size    int64
		wantErr string
	}{
		{name: "match", st: coredogv1.StorageStatus{SHA256: "AB12"}, size: 100},
		{name: "no checksum recorded", size: 100},
		{name: "no size recorded", st: coredogv1.StorageStatus{SHA256: "ab12"}},
		{name: "checksum mismatch", st: coredogv1.StorageStatus{SHA256: "ffff"}, size: 100, wantErr: "checksum mismatch"},
		{name: "size mismatch", st: coredogv1.StorageStatus{SHA256: "ab12"}, size: 99, wantErr: "size mismatch"},
	} {
		err := checkIntegrity(good, &tc.st, tc.size)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (!errors.Is(err, errIntegrity) || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestStoredObject(t *testing.T) {
	for _, tc := range []struct {
		cd   coredogv1.CoreDump
		want string
	}{
		{testDump("ok", 0), ""},
		{testDump("pending", 0, withPhase(coredogv1.PhasePending, "", "")), "phase is Pending; wait until it is Uploaded"},
		{testDump("skipped", 0, withPhase(coredogv1.PhaseSkipped, "TooLarge", "1Gi > 512Mi")), "phase is Skipped (TooLarge); skipped dumps are not stored, only described: 1Gi > 512Mi"},
		{testDump("failed", 0, withPhase(coredogv1.PhaseFailed, "", "403")), "the upload failed for good (kubectl coredog describe failed says why): 403"},
	} {
		_, err := storedObject(&tc.cd)
		if tc.want == "" && err != nil || tc.want != "" && (!errors.Is(err, errNotStored) || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: error %v, want %q", tc.cd.Name, err, tc.want)
		}
	}
}

func TestDefaultFileName(t *testing.T) {
	for _, tc := range []struct {
		st   coredogv1.StorageStatus
		raw  bool
		want string
	}{
		{coredogv1.StorageStatus{Compression: coredogv1.CompressionZstd}, false, "n.core"},
		{coredogv1.StorageStatus{Compression: coredogv1.CompressionZstd}, true, "n.core.zst"},
		{coredogv1.StorageStatus{Compression: coredogv1.CompressionGzip}, true, "n.core.gz"},
		{coredogv1.StorageStatus{Compression: coredogv1.CompressionNone}, true, "n.core"},
		{coredogv1.StorageStatus{Key: "a/b.gz"}, true, "n.core.gz"},
		{coredogv1.StorageStatus{Key: "a/b.zst"}, true, "n.core.zst"},
	} {
		if got := defaultFileName("n", &tc.st, tc.raw); got != tc.want {
			t.Errorf("%+v raw=%v: %q, want %q", tc.st, tc.raw, got, tc.want)
		}
	}
}

func TestPlace(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	target := filepath.Join(dir, "core")
	if err := place(write(".tmp1", "one"), target, false); err != nil {
		t.Fatal(err)
	}
	tmp2 := write(".tmp2", "two")
	if err := place(tmp2, target, false); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("second place without force: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "one" {
		t.Errorf("target was replaced: %q", b)
	}
	if err := place(tmp2, target, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(target); string(b) != "two" {
		t.Errorf("target was not replaced: %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

func TestStoreError(t *testing.T) {
	s3, _ := storage.ParseURL("s3://cores")
	file, _ := storage.ParseURL("file:///srv/store")
	for _, tc := range []struct {
		name    string
		loc     *storage.Location
		err     error
		want    string
		wantErr error
	}{
		{"gone", s3, fmt.Errorf("%w: s3://cores/k", storage.ErrNotFound), "is gone from storage", nil},
		{"no credentials", s3, errors.New("operation error S3: GetObject, get identity: get credentials: failed to refresh cached credentials, no EC2 IMDS role found"),
			"set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", errNoCredentials},
		{"access denied", s3, fmt.Errorf("reading s3://cores/k: %w: %w to bucket \"cores\": api error AccessDenied", storage.ErrCredentials, storage.ErrAccessDenied),
			"your credentials may not read s3://cores/k; ask for read access", errNoCredentials},
		{"file not mounted", file, fmt.Errorf("directory /srv/store does not exist: %w", fs.ErrNotExist), "does not exist on this machine", nil},
		{"other", s3, errors.New("connection reset"), "reading s3://cores/k: connection reset", nil},
	} {
		err := storeError(tc.loc, "s3://cores/k", tc.err)
		if !strings.Contains(err.Error(), tc.want) || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestProgress(t *testing.T) {
	if got := strings.TrimSpace(progressLine("core-a", 12<<20, 41<<20)); got != "Downloading core-a  12Mi / 41Mi   29%" {
		t.Errorf("progressLine = %q", got)
	}
	if got := progressLine("core-a", 1, 2); len(got) != 70 {
		t.Errorf("progressLine is not padded: %q", got)
	}
	clock := now
	var out bytes.Buffer
	p := &progress{r: strings.NewReader(strings.Repeat("x", 100)), w: &out, total: 100, label: "d", now: func() time.Time { clock = clock.Add(time.Second); return clock }}
	buf := make([]byte, 10)
	for {
		if _, err := p.Read(buf); err != nil {
			break
		}
	}
	p.done()
	if !strings.HasSuffix(strings.TrimRight(out.String(), " \n"), "100 / 100  100%") || !strings.HasPrefix(out.String(), "\r") {
		t.Errorf("progress output %q", out.String())
	}
	var nilProgress *progress
	nilProgress.done() // must not panic
}

func TestDownloadRefusesTerminal(t *testing.T) {
	cd := testDump("core-a", 0)
	a := &app{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}, isTerminal: func(io.Writer) bool { return true }}
	if _, err := a.fetchDump(context.Background(), &cd, downloadOptions{output: "-"}); err == nil || !strings.Contains(err.Error(), "terminal") {
		t.Errorf("writing to a terminal: %v", err)
	}
}

// The storage library names compressions as the API does, without
// importing it: every value of the API's enum must have an encoding.
func TestEveryCompressionHasAnEncoding(t *testing.T) {
	for _, c := range []coredogv1.Compression{coredogv1.CompressionZstd, coredogv1.CompressionGzip, coredogv1.CompressionNone} {
		if e, ok := storage.EncodingOf(string(c)); !ok || compressionOf(&coredogv1.StorageStatus{Key: "k" + e.Ext}) != c {
			t.Errorf("compression %s: encoding %+v, %v", c, e, ok)
		}
	}
}
