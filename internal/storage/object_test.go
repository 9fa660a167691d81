package storage

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// The extensions and content types are those of objects already stored:
// they must never change.
func TestEncodingOf(t *testing.T) {
	for _, tc := range []struct {
		compression, ext, contentType string
		ok                            bool
	}{
		{"Zstd", ".zst", "application/zstd", true},
		{"Gzip", ".gz", "application/gzip", true},
		{"None", ".core", "application/octet-stream", true},
		{"", "", "", false},
		{"zstd", "", "", false},
		{"Brotli", "", "", false},
	} {
		e, ok := EncodingOf(tc.compression)
		if ok != tc.ok || e.Ext != tc.ext || e.ContentType != tc.contentType {
			t.Errorf("EncodingOf(%q) = %+v, %v; want %s, %s, %v", tc.compression, e, ok, tc.ext, tc.contentType, tc.ok)
		}
		if ok && e.Compression != tc.compression {
			t.Errorf("EncodingOf(%q).Compression = %q", tc.compression, e.Compression)
		}
	}
}

func TestEncodingOfKey(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"ns/pod/core.zst", "Zstd"},
		{"ns/pod/core.gz", "Gzip"},
		{"ns/pod/core.core", "None"},
		{"ns/pod/core", "None"},
		{"ns/pod.zst/core", "None"},
		{"core.json", "None"},
	} {
		if got := EncodingOfKey(tc.key).Compression; got != tc.want {
			t.Errorf("EncodingOfKey(%q) = %s, want %s", tc.key, got, tc.want)
		}
	}
}

func TestSidecarKey(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"p/ns/web-0/20260101T000000Z-core.zst", "p/ns/web-0/20260101T000000Z-core.json"},
		{"a/b.gz", "a/b.json"},
		{"a/b.core", "a/b.json"},
		{"a/b", "a/b.json"},
		{"a/b.zst.gz", "a/b.zst.json"},
		{"a.zst/b", "a.zst/b.json"},
	} {
		if got := SidecarKey(tc.key); got != tc.want {
			t.Errorf("SidecarKey(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

func TestEncodingNewReader(t *testing.T) {
	const text = "a core dump, or something like it"
	var zs, gz bytes.Buffer
	zw, err := zstd.NewWriter(&zs)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write([]byte(text))
	zw.Close()
	gw := gzip.NewWriter(&gz)
	gw.Write([]byte(text))
	gw.Close()
	for _, tc := range []struct {
		enc    Encoding
		stored []byte
	}{
		{EncodingZstd, zs.Bytes()},
		{EncodingGzip, gz.Bytes()},
		{EncodingNone, []byte(text)},
	} {
		r, err := tc.enc.NewReader(bytes.NewReader(tc.stored))
		if err != nil {
			t.Fatalf("%s: %v", tc.enc.Compression, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(got) != text {
			t.Errorf("%s: read %q, %v; want %q", tc.enc.Compression, got, err, text)
		}
	}
	if _, err := EncodingGzip.NewReader(strings.NewReader("not gzip at all, just text")); !errors.Is(err, gzip.ErrHeader) {
		t.Errorf("gzip of garbage: %v, want gzip.ErrHeader", err)
	}
	if _, err := (Encoding{Compression: "Brotli"}).NewReader(strings.NewReader("")); err == nil {
		t.Error("an unknown encoding decodes")
	}
}

func TestLocationKeyOf(t *testing.T) {
	for _, tc := range []struct {
		bucketURL, objectURL, key string
		ok                        bool
	}{
		{"s3://b/dumps?region=eu-west-1", "s3://b/dumps/ns/core.zst", "ns/core.zst", true},
		{"s3://b", "s3://b/ns/core.zst", "ns/core.zst", true},
		{"gs://b/p/q", "gs://b/p/q/core.gz", "core.gz", true},
		{"azblob://c/p", "azblob://c/p/core.zst", "core.zst", true},
		{"file:///var/lib/store", "file:///var/lib/store/ns/core.zst", "ns/core.zst", true},
		{"s3://b/dumps", "s3://b/other/core.zst", "", false},
		{"s3://b/dumps", "s3://b2/dumps/core.zst", "", false},
		{"s3://b/dumps", "gs://b/dumps/core.zst", "", false},
		{"s3://b/dumps", "s3://b/dumps/", "", false},
		{"s3://b", "s3://b/", "", false},
		{"file:///var/lib/store", "file:///var/lib/store2/core.zst", "", false},
		{"file:///var/lib/store", "file:///var/lib/store/a/../b", "", false},
		{"file:///var/lib/store", "file:///var/lib/store/", "", false},
	} {
		loc, err := ParseURL(tc.bucketURL)
		if err != nil {
			t.Fatal(err)
		}
		key, ok := loc.KeyOf(tc.objectURL)
		if key != tc.key || ok != tc.ok {
			t.Errorf("%s: KeyOf(%s) = %q, %v; want %q, %v", tc.bucketURL, tc.objectURL, key, ok, tc.key, tc.ok)
		}
		if ok && loc.ObjectURL(key) != tc.objectURL {
			t.Errorf("%s: ObjectURL(%q) = %s, want %s", tc.bucketURL, key, loc.ObjectURL(key), tc.objectURL)
		}
	}
}

func TestLocationStoredKey(t *testing.T) {
	loc, err := ParseURL("s3://b/dumps?region=eu-west-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		objectURL, fullKey, key string
		ok                      bool
	}{
		{"s3://b/dumps/ns/core.zst", "dumps/ns/core.zst", "ns/core.zst", true},
		{"s3://b/dumps/ns/core.zst", "ns/core.zst", "", false},
		{"s3://b/dumps/ns/core.zst", "dumps/ns/other.zst", "", false},
		{"s3://b/elsewhere/core.zst", "elsewhere/core.zst", "", false},
		{"gs://b/dumps/ns/core.zst", "dumps/ns/core.zst", "", false},
	} {
		key, ok := loc.StoredKey(tc.objectURL, tc.fullKey)
		if ok != tc.ok || (ok && key != tc.key) {
			t.Errorf("StoredKey(%s, %s) = %q, %v; want %q, %v", tc.objectURL, tc.fullKey, key, ok, tc.key, tc.ok)
		}
	}
}

func TestCtxReader(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := CtxReader{Ctx: ctx, R: strings.NewReader("abcdef")}
	buf := make([]byte, 3)
	if n, err := r.Read(buf); n != 3 || err != nil {
		t.Fatalf("read %d, %v", n, err)
	}
	cancel()
	if n, err := r.Read(buf); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel: read %d, %v; want 0, context.Canceled", n, err)
	}
}

func TestLocationOf(t *testing.T) {
	for _, tc := range []struct {
		objectURL, key, bucketURL string
	}{
		{"s3://cores/prod/ns/pod/k.zst", "prod/ns/pod/k.zst", "s3://cores"},
		{"gs://cores/k.gz", "k.gz", "gs://cores"},
		{"azblob://c/a b/%41.zst", "a b/%41.zst", "azblob://c"},
		{"file:///srv/store/prod/k.zst", "k.zst", "file:///srv/store/prod"},
		{"file:///srv/store/prod/k.zst", "prod/k.zst", "file:///srv/store"},
		{"s3://cores/other/k.zst", "prod/k.zst", ""},
		{"s3://cores/k.zst", "", ""},
		{"file:///k.zst", "k.zst", ""},
		{"file:///srv/k.zst", "other.zst", ""},
		{"ftp://cores/k.zst", "k.zst", ""},
		{"cores/k.zst", "k.zst", ""},
	} {
		loc, err := LocationOf(tc.objectURL, tc.key)
		if tc.bucketURL == "" {
			if !errors.Is(err, ErrInvalidURL) {
				t.Errorf("LocationOf(%s, %s) = %v, %v; want ErrInvalidURL", tc.objectURL, tc.key, loc, err)
			}
			continue
		}
		if err != nil || loc.BucketURL() != tc.bucketURL || loc.Prefix != "" {
			t.Errorf("LocationOf(%s, %s) = %v, %v; want %s", tc.objectURL, tc.key, loc, err, tc.bucketURL)
			continue
		}
		if got := loc.ObjectURL(tc.key); got != tc.objectURL {
			t.Errorf("LocationOf(%s, %s): ObjectURL gives %s back", tc.objectURL, tc.key, got)
		}
	}
}
