// Package wire_test runs the download protocol end to end: the agent's own
// server (agent/serve) answering the manager's own client
// (controllers/agentclient) over mutual TLS. Neither side imports the
// other; this test is where they meet.
package wire_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/controllers/agentclient"
	"github.com/coredog/coredog/internal/pki"
)

// servedCommandLine is what the agent registers as the process's arguments;
// servedCommandLineSafe is what the manager must keep of them.
// agentNode is the node of the agent these tests run.
const (
	servedCommandLine     = "./server --password=hunter2 \x1b[2J \xff"
	servedCommandLineSafe = `./server --password=hunter2 \x1b[2J \xff`
	agentNode             = "n"
)

// agentWith serves the file at path as "core-1" from a real agent server
// with a serving certificate for policy "p" on node "n" (issued as the
// manager issues it, for the agent's own key), and returns its endpoint and
// a manager client holding that policy's client certificate.
func agentWith(t *testing.T, path string) (string, *agentclient.Client) {
	t.Helper()
	now := time.Now()
	ca, err := pki.NewCA("test", now)
	if err != nil {
		t.Fatal(err)
	}
	id, err := serve.NewIdentity("p", agentNode)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err := ca.SignAgentCSR(id.CSR(), "p", agentNode, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.Accept(certPEM, ca.CertPEM, now); err != nil {
		t.Fatal(err)
	}
	tlsDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(tlsDir, pki.CACertKey), ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := agentclient.NewCredentials("p", ca, now)
	if err != nil {
		t.Fatal(err)
	}
	client, err := agentclient.New(creds)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.Close)

	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	reg := serve.NewRegistry()
	reg.Add(serve.Entry{Name: "core-1", Path: path, Device: uint64(st.Dev), Inode: st.Ino, Size: st.Size, CommandLine: servedCommandLine}) //nolint:unconvert
	srv, err := serve.NewServer(serve.Options{Registry: reg, TLSDir: tlsDir, Identity: id, Logger: logr.Discard()}, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + srv.Addr(), client
}

func writeCore(t *testing.T, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "core")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestFetchFromRealAgentServer streams a registered file from the agent's
// own server for each compression and checks the verified totals.
func TestFetchFromRealAgentServer(t *testing.T) {
	data := make([]byte, 3<<20)
	_, _ = rand.Read(data[:1<<20])
	endpoint, client := agentWith(t, writeCore(t, data))
	ctx := context.Background()
	for _, c := range []coredogv1.Compression{coredogv1.CompressionZstd, coredogv1.CompressionGzip, coredogv1.CompressionNone} {
		t.Run(string(c), func(t *testing.T) {
			s, err := client.Fetch(ctx, endpoint, agentNode, "core-1", c, int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			compressed, err := io.ReadAll(s)
			if err != nil {
				t.Fatalf("reading: %v", err)
			}
			if s.RawSize != int64(len(data)) || s.SHA256 != sha256Hex(data) {
				t.Fatalf("verified %d bytes %s", s.RawSize, s.SHA256)
			}
			if s.CommandLine != servedCommandLineSafe {
				t.Fatalf("command line %q, want %q", s.CommandLine, servedCommandLineSafe)
			}
			if c == coredogv1.CompressionNone && !bytes.Equal(compressed, data) {
				t.Fatal("uncompressed stream differs")
			}
			if c != coredogv1.CompressionNone && len(compressed) >= len(data) {
				t.Fatalf("compressed %d bytes into %d", len(data), len(compressed))
			}
		})
	}
	t.Run("size changed after capture", func(t *testing.T) {
		s, err := client.Fetch(ctx, endpoint, agentNode, "core-1", coredogv1.CompressionZstd, int64(len(data))+1)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if _, err := io.ReadAll(s); !errors.Is(err, agentclient.ErrIntegrity) {
			t.Fatalf("err = %v, want ErrIntegrity", err)
		}
	})
	t.Run("not served", func(t *testing.T) {
		if _, err := client.Fetch(ctx, endpoint, agentNode, "core-2", coredogv1.CompressionZstd, 1); !errors.Is(err, agentclient.ErrNotServed) {
			t.Fatalf("err = %v, want ErrNotServed", err)
		}
	})
}

// TestFetchEmptyFile: an empty core is served and checked in every encoding
// (the zstd encoder writes nothing at all for it).
func TestFetchEmptyFile(t *testing.T) {
	endpoint, client := agentWith(t, writeCore(t, nil))
	for _, c := range []coredogv1.Compression{coredogv1.CompressionZstd, coredogv1.CompressionGzip, coredogv1.CompressionNone} {
		s, err := client.Fetch(context.Background(), endpoint, agentNode, "core-1", c, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(s); err != nil {
			t.Errorf("%s: %v", c, err)
		}
		if s.RawSize != 0 || s.SHA256 != sha256Hex(nil) {
			t.Errorf("%s: raw %d bytes sha256 %s", c, s.RawSize, s.SHA256)
		}
		s.Close()
	}
}
