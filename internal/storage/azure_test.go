package storage

import (
	"context"
	"encoding/base64"
	"io"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/azureblob"
)

// azureTestAccount and its key sign the requests to the fake service.
const azureTestAccount = "coredogtest"

func openFakeAzure(t *testing.T, prefix string) (*fakeAzure, Store) {
	t.Helper()
	fake := newFakeAzure(t, azureTestAccount)
	loc := mustParse(t, "azblob://cores"+prefix+"?protocol=http&storage_account="+azureTestAccount+"&domain="+url.QueryEscape(fake.host()))
	key := base64.StdEncoding.EncodeToString([]byte("an azure account key of some length"))
	return fake, mustOpen(t, loc, secret(KeyAzureKey, key))
}

func TestAzureStore(t *testing.T) {
	fake, s := openFakeAzure(t, "/prod/eu")
	ctx := context.Background()

	t.Run("40 MiB round trip", func(t *testing.T) {
		// Two blocks in flight at most: the write holds two 8 MiB buffers.
		if grew := checkRoundTrip(t, s, "team-a/db-0/core.zst", 40*mib); grew > azureConcurrency*defaultPartSize+2*mib {
			t.Errorf("the live heap grew by %.1f MiB; want at most %d blocks of 8 MiB and 2 MiB", float64(grew)/mib, azureConcurrency)
		}
		b := fake.blob("cores/prod/eu/team-a/db-0/core.zst")
		if b == nil {
			t.Fatalf("no blob under the prefix; blobs: %v", fake.blobNames())
		}
		if want := []int64{8 * mib, 8 * mib, 8 * mib, 8 * mib, 8 * mib}; !slices.Equal(b.blockSizes, want) {
			t.Errorf("blocks of %v bytes, want %v", b.blockSizes, want)
		}
		if b.contentType != "application/zstd" || b.metadata["coredump"] != "cd-1" {
			t.Errorf("content type %q, metadata %v", b.contentType, b.metadata)
		}
		if n := fake.maxInFlight.Load(); n < 1 || n > azureConcurrency {
			t.Errorf("%d blocks went up at once, want 1 to %d", n, azureConcurrency)
		}
	})
	t.Run("a size hint makes small blocks", func(t *testing.T) {
		before := fake.putBlocks.Load()
		src := newGenReader(12*mib, 4)
		if n, err := s.Write(ctx, "hint/core.zst", src, WriteOptions{SizeHint: 12 * mib}); err != nil || n != 12*mib {
			t.Fatalf("Write: %d, %v", n, err)
		}
		if got := fake.putBlocks.Load() - before; got != 3 {
			t.Errorf("12 MiB went up in %d blocks, want 3 of 5 MiB", got)
		}
	})
	t.Run("aborted writes", func(t *testing.T) {
		checkAborts(t, s, func(t *testing.T, key string) []string {
			// Staged blocks are never committed; Azure drops them after a
			// week, and no request can remove them sooner.
			var left []string
			for _, n := range fake.blobNames() {
				if strings.Contains(n, "/aborts/") {
					left = append(left, n)
				}
			}
			return left
		})
	})
	t.Run("delete", func(t *testing.T) { checkDelete(t, s) })
	t.Run("names and metadata are escaped as gocloud escaped them", func(t *testing.T) {
		key := "team-a/100%#?\"\\x/__0x41__.zst"
		md := map[string]string{"pod-name": "web 0/é", "_x": "y"}
		if _, err := s.Write(ctx, key, strings.NewReader("core"), WriteOptions{Metadata: md}); err != nil {
			t.Fatal(err)
		}
		b := fake.blob("cores/prod/eu/team-a/100__0x25____0x23____0x3f____0x22____0x5c__x/__0x5f___0x41__.zst")
		if b == nil {
			t.Fatalf("blob not found under its escaped name; blobs: %v", fake.blobNames())
		}
		if b.metadata["pod__0x2d__name"] != "web%200%2F%C3%A9" || b.metadata["_x"] != "y" {
			t.Errorf("metadata stored as %v", b.metadata)
		}
		r, err := s.Read(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if got, _ := io.ReadAll(r); string(got) != "core" {
			t.Errorf("read back %q", got)
		}
		if hexUnescape(azureBlobName(key)) != key {
			t.Errorf("escaping does not round-trip: %q", azureBlobName(key))
		}
	})
	t.Run("blobs gocloud wrote read back, and gocloud reads ours", func(t *testing.T) {
		b, err := azureblob.OpenBucket(ctx, s.(*azureStore).client, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		md := map[string]string{"pod-name": "web 0/é"}
		for _, key := range []string{"old/core.zst", "old/100%#?.zst"} {
			if err := b.WriteAll(ctx, "prod/eu/"+key, []byte("old core"), &blob.WriterOptions{ContentType: "application/zstd", Metadata: md}); err != nil {
				t.Fatal(err)
			}
			checkOldObject(t, s, key)
		}
		key := "new/50%?__0x41__.zst"
		if _, err := s.Write(ctx, key, strings.NewReader("new core"), WriteOptions{ContentType: "application/zstd", Metadata: md}); err != nil {
			t.Fatal(err)
		}
		a, err := b.Attributes(ctx, "prod/eu/"+key)
		if err != nil {
			t.Fatal(err)
		}
		if a.ContentType != "application/zstd" || a.Metadata["pod-name"] != md["pod-name"] || a.Size != 8 {
			t.Errorf("gocloud read content type %q, metadata %v, size %d", a.ContentType, a.Metadata, a.Size)
		}
		if got, err := b.ReadAll(ctx, "prod/eu/"+key); err != nil || string(got) != "new core" {
			t.Errorf("gocloud read %q, %v", got, err)
		}
	})
	t.Run("refusals name the object and wrap ErrCredentials", func(t *testing.T) {
		defer fake.refuse.Store(0)
		checkRefusals(t, s, "azblob://cores/prod/eu/x/core.zst", func(code int) { fake.refuse.Store(int32(code)) })
	})
	t.Run("signed URL", func(t *testing.T) {
		u, err := s.SignedURL(ctx, "team-a/db-0/core.zst", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		q := pu.Query()
		if pu.Host != fake.host() || pu.Path != "/"+azureTestAccount+"/cores/prod/eu/team-a/db-0/core.zst" || q.Get("sp") != "r" || q.Get("sig") == "" {
			t.Errorf("SAS URL %s", u)
		}
	})
}

func TestAzureServiceURL(t *testing.T) {
	for _, tc := range []struct {
		query, want, wantErr string
	}{
		{query: "storage_account=acct", want: "https://acct.blob.core.windows.net"},
		{query: "storage_account=acct&domain=blob.core.chinacloudapi.cn", want: "https://acct.blob.core.chinacloudapi.cn"},
		{query: "storage_account=acct&domain=127.0.0.1:10000&protocol=http", want: "http://127.0.0.1:10000/acct"},
		{query: "storage_account=acct&domain=azurite:10000&localemu=true&protocol=http", want: "http://azurite:10000/acct"},
		{query: "storage_account=acct&domain=cdn.example.com&cdn=true", want: "https://cdn.example.com"},
		{query: "storage_account=acct&protocol=ftp", wantErr: "protocol"},
		{query: "", wantErr: "no storage account"},
	} {
		q, _ := url.ParseQuery(tc.query)
		o, err := azureServiceOptions(q)
		if err != nil {
			t.Fatal(err)
		}
		got, err := azureServiceURL(o)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %q, %v; want an error about %s", tc.query, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.query, got, err, tc.want)
		}
	}
}
