package storage

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
)

const mib = 1 << 20

// errSourceBroke stands for an agent connection that dies mid-dump.
var errSourceBroke = errors.New("source broke")

// genReader produces size bytes without holding them: 1 MiB of random data,
// then 1 MiB of zeros, and so on, like a core dump's mix of mapped pages and
// holes. It hashes what it hands out, can fail or call a hook at given
// offsets, and calls sample every sampleEvery bytes.
type genReader struct {
	size, off   int64
	rng         *rand.ChaCha8
	sum         hash.Hash
	failAt      int64 // 0: never
	failErr     error // what it fails with; errSourceBroke when nil
	onAt        int64 // 0: never
	on          func()
	sampleEvery int64
	sample      func()
}

func newGenReader(size int64, seed byte) *genReader {
	var s [32]byte
	s[0] = seed
	return &genReader{size: size, rng: rand.NewChaCha8(s), sum: sha256.New()}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.failAt > 0 && g.off >= g.failAt {
		if g.failErr != nil {
			return 0, g.failErr
		}
		return 0, errSourceBroke
	}
	if g.off >= g.size {
		return 0, io.EOF
	}
	if g.on != nil && g.off >= g.onAt {
		g.on()
		g.on = nil
	}
	// Never cross a 1 MiB block, a sample point or the failure point.
	n := min(int64(len(p)), g.size-g.off, mib-g.off%mib)
	if g.failAt > g.off {
		n = min(n, g.failAt-g.off)
	}
	if g.onAt > g.off {
		n = min(n, g.onAt-g.off)
	}
	if (g.off/mib)%2 == 0 {
		_, _ = g.rng.Read(p[:n])
	} else {
		clear(p[:n])
	}
	g.sum.Write(p[:n])
	before := g.off
	g.off += n
	if g.sample != nil && g.sampleEvery > 0 && before/g.sampleEvery != g.off/g.sampleEvery {
		g.sample()
	}
	return int(n), nil
}

func (g *genReader) hex() string { return hex.EncodeToString(g.sum.Sum(nil)) }

// heapWatch records how far the live heap grows above where it started.
// Each sample forces a collection, so garbage the pacer has not reclaimed
// yet does not count: what is measured is what a write holds on to.
type heapWatch struct {
	base, peakLive, baseInuse, peakInuse uint64
}

func newHeapWatch() *heapWatch {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &heapWatch{base: ms.HeapAlloc, peakLive: ms.HeapAlloc, baseInuse: ms.HeapInuse, peakInuse: ms.HeapInuse}
}

func (h *heapWatch) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.peakInuse = max(h.peakInuse, ms.HeapInuse)
	runtime.GC()
	runtime.ReadMemStats(&ms)
	h.peakLive = max(h.peakLive, ms.HeapAlloc)
}

func (h *heapWatch) liveGrowth() uint64 { return h.peakLive - h.base }

// maxLiveGrowth leaves room above the S3 path's expected s3Concurrency+2
// parts (24 MiB) and still catches a write that buffers a whole 40 MiB
// object.
const maxLiveGrowth = 40 * mib

func mustParse(t *testing.T, raw string) *Location {
	t.Helper()
	loc, err := ParseURL(raw)
	if err != nil {
		t.Fatalf("ParseURL(%q): %v", raw, err)
	}
	return loc
}

func mustOpen(t *testing.T, loc *Location, creds map[string][]byte) Store {
	t.Helper()
	s, err := Open(context.Background(), loc, creds)
	if err != nil {
		t.Fatalf("Open(%s): %v", loc.BucketURL(), err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// checkRoundTrip streams size bytes into key and reads them back, checking
// size, hash and the heap. It returns the heap growth for the log.
// It returns the live heap's growth during the write.
func checkRoundTrip(t *testing.T, s Store, key string, size int64) uint64 {
	t.Helper()
	ctx := context.Background()
	src := newGenReader(size, 1)
	hw := newHeapWatch()
	src.sampleEvery, src.sample = 2*mib, hw.sample
	n, err := s.Write(ctx, key, src, WriteOptions{ContentType: "application/zstd", Metadata: map[string]string{"coredump": "cd-1"}})
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	if n != size {
		t.Fatalf("Write wrote %d bytes, want %d", n, size)
	}
	t.Logf("writing %d MiB grew the live heap by at most %.1f MiB (HeapInuse by %.1f MiB)",
		size/mib, float64(hw.liveGrowth())/mib, float64(hw.peakInuse-hw.baseInuse)/mib)
	if hw.liveGrowth() > maxLiveGrowth {
		t.Errorf("the live heap grew by %.1f MiB during a %d MiB write; want under %d MiB",
			float64(hw.liveGrowth())/mib, size/mib, maxLiveGrowth/mib)
	}
	if got, err := s.Size(ctx, key); err != nil || got != size {
		t.Fatalf("Size = %d, %v; want %d", got, err, size)
	}
	r, err := s.Read(ctx, key)
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	defer r.Close()
	h := sha256.New()
	if m, err := io.Copy(h, r); err != nil || m != size {
		t.Fatalf("reading back: %d bytes, %v", m, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != src.hex() {
		t.Fatalf("SHA-256 read back %s, written %s", got, src.hex())
	}
	// Every store's reader tells the type the object was stored with.
	if br, ok := r.(interface{ ContentType() string }); !ok || br.ContentType() != "application/zstd" {
		t.Errorf("content type not kept (reader %T)", r)
	}
	return hw.liveGrowth()
}

// abortCases are writes that must leave nothing at their key.
var abortCases = []struct {
	name     string
	failAt   int64 // the source fails here
	failErr  error // with this error (errSourceBroke when nil)
	cancelAt int64 // or the caller cancels here
}{
	{name: "source fails within the first part", failAt: 1 * mib},
	{name: "source fails after parts went up", failAt: 20 * mib},
	// A truncated HTTP body ends in io.ErrUnexpectedEOF, which must not
	// pass for the end of the dump.
	{name: "source cut short within the first part", failAt: 1 * mib, failErr: io.ErrUnexpectedEOF},
	{name: "source cut short at a part boundary", failAt: 16 * mib, failErr: io.ErrUnexpectedEOF},
	{name: "caller cancels after parts went up", cancelAt: 12 * mib},
}

// checkAborts runs abortCases against s. leftovers reports anything a failed
// write left behind that a store-level Size would not show (temp files,
// unfinished multipart uploads).
func checkAborts(t *testing.T, s Store, leftovers func(t *testing.T, key string) []string) {
	for i, tc := range abortCases {
		t.Run(tc.name, func(t *testing.T) {
			key := "aborts/case-" + string(rune('a'+i)) + ".zst"
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			src := newGenReader(40*mib, 2)
			src.failAt, src.failErr = tc.failAt, tc.failErr
			wantErr := errSourceBroke
			if tc.failErr != nil {
				wantErr = tc.failErr
			}
			if tc.cancelAt > 0 {
				src.onAt, src.on, wantErr = tc.cancelAt, cancel, context.Canceled
			}
			_, err := s.Write(ctx, key, src, WriteOptions{})
			if !errors.Is(err, wantErr) {
				t.Fatalf("Write error = %v, want %v", err, wantErr)
			}
			if _, err := s.Size(context.Background(), key); !errors.Is(err, ErrNotFound) {
				t.Fatalf("after a failed write, Size error = %v, want ErrNotFound", err)
			}
			if left := leftovers(t, key); len(left) > 0 {
				t.Fatalf("a failed write left %v", left)
			}
		})
	}
}

func checkDelete(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.Write(ctx, "del/x.json", strings.NewReader(`{}`), WriteOptions{ContentType: "application/json"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "del/x.json"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Size(ctx, "del/x.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Size after Delete: %v, want ErrNotFound", err)
	}
	if _, err := s.Read(ctx, "del/x.json"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read after Delete: %v, want ErrNotFound", err)
	}
	if err := s.Delete(ctx, "del/never-written"); err != nil {
		t.Fatalf("Delete of a missing key: %v", err)
	}
	// A dump can compress to nothing; an empty object is still an object.
	if n, err := s.Write(ctx, "del/empty", strings.NewReader(""), WriteOptions{}); err != nil || n != 0 {
		t.Fatalf("Write of an empty object: %d, %v", n, err)
	}
	if n, err := s.Size(ctx, "del/empty"); err != nil || n != 0 {
		t.Fatalf("Size of an empty object: %d, %v", n, err)
	}
}

func TestWriteRefusesBadInput(t *testing.T) {
	s := mustOpen(t, mustParse(t, "file://"+t.TempDir()), nil)
	ctx := context.Background()
	cases := []struct {
		name    string
		key     string
		md      map[string]string
		wantErr string
	}{
		{name: "dot-dot key", key: "../escape", wantErr: ".. segment"},
		{name: "absolute key", key: "/etc/passwd", wantErr: "starts with /"},
		{name: "empty key", key: "", wantErr: "empty key"},
		{name: "metadata key with a space", key: "k", md: map[string]string{"pod name": "x"}, wantErr: "only ASCII letters"},
		{name: "metadata keys differing in case", key: "k", md: map[string]string{"Pod": "a", "pod": "b"}, wantErr: "differ only in case"},
		{name: "metadata too large", key: "k", md: map[string]string{"a": strings.Repeat("x", 3000)}, wantErr: "more than 2048"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Write(ctx, tc.key, strings.NewReader("data"), WriteOptions{Metadata: tc.md})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Write error = %v, want one containing %q", err, tc.wantErr)
			}
			if tc.key != "" && !strings.HasPrefix(tc.key, "/") && !strings.HasPrefix(tc.key, "..") {
				if _, err := s.Size(ctx, tc.key); !errors.Is(err, ErrNotFound) {
					t.Fatalf("a refused write left an object: %v", err)
				}
			}
		})
	}
	for _, op := range []func(string) error{
		func(k string) error { return s.Delete(ctx, k) },
		func(k string) error { _, err := s.Size(ctx, k); return err },
		func(k string) error { _, err := s.Read(ctx, k); return err },
	} {
		if err := op("a/../../b"); !errors.Is(err, ErrUnsafeKey) {
			t.Errorf("unsafe key accepted: %v", err)
		}
	}
}

func TestFileStore(t *testing.T) {
	root := filepath.Join(t.TempDir(), "store")
	s := mustOpen(t, mustParse(t, "file://"+root), nil)

	t.Run("40 MiB round trip", func(t *testing.T) {
		checkRoundTrip(t, s, "team-a/db-0/core.zst", 40*mib)
		for _, c := range []struct {
			path string
			mode fs.FileMode
		}{
			{root, 0o700},
			{filepath.Join(root, "team-a"), 0o700},
			{filepath.Join(root, "team-a/db-0"), 0o700},
			{filepath.Join(root, "team-a/db-0/core.zst"), 0o600},
			{filepath.Join(root, "team-a/db-0/core.zst.attrs"), 0o600},
		} {
			fi, err := os.Stat(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != c.mode {
				t.Errorf("%s has mode %#o, want %#o", c.path, got, c.mode)
			}
		}
	})
	t.Run("attributes read back by fileblob", func(t *testing.T) {
		// The sidecar is written here rather than by fileblob; fileblob
		// must still read it.
		b, err := fileblob.OpenBucket(root, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		a, err := b.Attributes(context.Background(), "team-a/db-0/core.zst")
		if err != nil {
			t.Fatal(err)
		}
		if a.ContentType != "application/zstd" || a.Metadata["coredump"] != "cd-1" || a.Size != 40*mib {
			t.Fatalf("attributes: content type %q, metadata %v, size %d", a.ContentType, a.Metadata, a.Size)
		}
	})
	t.Run("objects fileblob wrote read back", func(t *testing.T) {
		// Earlier versions wrote through fileblob, with its own sidecar
		// (and an MD5 in it); keys that look like escape sequences were
		// escaped.
		b, err := fileblob.OpenBucket(root, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		ctx := context.Background()
		for _, key := range []string{"old/core.zst", "old/__0x41__/x.zst"} {
			if err := b.WriteAll(ctx, key, []byte("old core"), &blob.WriterOptions{ContentType: "application/zstd", Metadata: map[string]string{"coredump": "cd-0"}}); err != nil {
				t.Fatal(err)
			}
			checkOldObject(t, s, key)
			if err := s.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			if ok, err := b.Exists(ctx, key); ok || err != nil {
				t.Errorf("%s still exists for fileblob after Delete: %v", key, err)
			}
		}
		// And the other way: fileblob finds what this store wrote under
		// such a key.
		if _, err := s.Write(ctx, "new/__0x41__", strings.NewReader("new core"), WriteOptions{ContentType: "application/zstd"}); err != nil {
			t.Fatal(err)
		}
		if got, err := b.ReadAll(ctx, "new/__0x41__"); err != nil || string(got) != "new core" {
			t.Errorf("fileblob read %q, %v", got, err)
		}
	})
	t.Run("aborted writes", func(t *testing.T) {
		checkAborts(t, s, func(t *testing.T, key string) []string {
			var left []string
			_ = filepath.WalkDir(filepath.Join(root, "aborts"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					left = append(left, p)
				}
				return nil
			})
			return left
		})
	})
	t.Run("delete", func(t *testing.T) { checkDelete(t, s) })
	t.Run("file_mode and existing directory", func(t *testing.T) {
		dir := t.TempDir()
		s := mustOpen(t, mustParse(t, "file://"+dir+"?file_mode=0640&create_dir=false&metadata=skip"), nil)
		if _, err := s.Write(context.Background(), "k", strings.NewReader("x"), WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(filepath.Join(dir, "k"))
		if err != nil || fi.Mode().Perm() != 0o640 {
			t.Fatalf("stat: %v, mode %#o; want 0640", err, fi.Mode().Perm())
		}
		if _, err := os.Stat(filepath.Join(dir, "k.attrs")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("metadata=skip still wrote attributes: %v", err)
		}
	})
}

func TestPartSizeFor(t *testing.T) {
	for _, tc := range []struct {
		size int64
		want int
	}{
		{0, defaultPartSize},
		{-1, defaultPartSize},
		{1, minPartSize},
		{40 * mib, minPartSize},
		{fewParts * minPartSize, minPartSize},
		{fewParts*minPartSize + 1, defaultPartSize},
		{4 << 30, defaultPartSize},
		{maxParts * defaultPartSize, 9 * mib},
		{maxParts*defaultPartSize - 1, defaultPartSize},
		{100 << 30, 11 * mib},
		{MaxObjectSize, 53 * mib},
		// A size claimed by a CoreDump never sizes a chunk past maxPartSize.
		{1 << 50, maxPartSize},
	} {
		got := partSizeFor(tc.size)
		if got != tc.want {
			t.Errorf("partSizeFor(%d) = %d, want %d", tc.size, got, tc.want)
		}
		if tc.size > 0 && tc.size <= MaxObjectSize && int64(got)*maxParts < tc.size {
			t.Errorf("partSizeFor(%d) = %d: %d parts cannot hold it", tc.size, got, maxParts)
		}
	}
}

// A store that cannot be opened is a nil Store, not an interface holding a
// nil pointer that callers would take for an open store.
func TestOpenFailureIsNil(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, raw := range []string{"file://" + missing + "?create_dir=false", "s3://cores?endpoint=ftp://x", "azblob://cores"} {
		s, err := Open(context.Background(), mustParse(t, raw), nil)
		if err == nil || s != nil {
			t.Errorf("Open(%s) = %v, %v; want nil and an error", raw, s, err)
		}
	}
}

// startChildServer runs this test binary again as a server (the TestMain of
// the package serves when env is set), so that the server's memory does not
// count in the heap the store tests watch, and returns the endpoint it
// prints. The server exits when its stdin closes, at the end of the test.
func startChildServer(t *testing.T, env, what string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), env+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("%s did not start: %v", what, err)
	}
	return strings.TrimSpace(line)
}

// checkRefusals has the store's server refuse every request with 401, then
// 403 (refuse sets the status), and checks that every operation says so:
// ErrCredentials, ErrAccessDenied for 403 only, never ErrNotFound, and the
// object's URL, objectURL, in the message.
func checkRefusals(t *testing.T, s Store, objectURL string, refuse func(status int)) {
	t.Helper()
	ctx := context.Background()
	for _, tc := range []struct {
		status int
		denied bool
	}{{http.StatusUnauthorized, false}, {http.StatusForbidden, true}} {
		refuse(tc.status)
		ops := map[string]func() error{
			"Write":  func() error { _, err := s.Write(ctx, "x/core.zst", strings.NewReader("x"), WriteOptions{}); return err },
			"Size":   func() error { _, err := s.Size(ctx, "x/core.zst"); return err },
			"Read":   func() error { _, err := s.Read(ctx, "x/core.zst"); return err },
			"Delete": func() error { return s.Delete(ctx, "x/core.zst") },
		}
		for name, op := range ops {
			err := op()
			if !errors.Is(err, ErrCredentials) || errors.Is(err, ErrAccessDenied) != tc.denied ||
				!strings.Contains(err.Error(), objectURL) || errors.Is(err, ErrNotFound) {
				t.Errorf("%s answered %d: %v", name, tc.status, err)
			}
		}
	}
}

// checkOldObject reads key, which gocloud wrote as "old core" with the
// content type application/zstd, back through s.
func checkOldObject(t *testing.T, s Store, key string) {
	t.Helper()
	ctx := context.Background()
	if n, err := s.Size(ctx, key); err != nil || n != 8 {
		t.Fatalf("Size(%s) = %d, %v", key, n, err)
	}
	r, err := s.Read(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(r)
	_ = r.Close()
	if ct := r.(interface{ ContentType() string }).ContentType(); string(got) != "old core" || ct != "application/zstd" {
		t.Errorf("%s read back %q, %q", key, got, ct)
	}
}
