package cli

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/buildid"
)

// startDebuginfod runs `kubectl coredog debuginfod` in-process and returns
// its URL, read from what it prints.
func startDebuginfod(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, append([]string{"debuginfod"}, args...), pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("debuginfod: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("debuginfod did not stop")
		}
	})
	lines := bufio.NewScanner(pr)
	for lines.Scan() {
		if url, ok := strings.CutPrefix(lines.Text(), "export DEBUGINFOD_URLS="); ok {
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return url
		}
	}
	t.Fatalf("debuginfod printed no URL: %v", <-done)
	return ""
}

// TestGDBLoadsAStoredCoreThroughDebuginfod: the binary is stored by
// build-id as the manager stores it, then deleted; gdb, given only the core
// and DEBUGINFOD_URLS pointed at the plugin, shows the frames it shows with
// the binary present.
func TestGDBLoadsAStoredCoreThroughDebuginfod(t *testing.T) {
	c := newRealCrash(t)
	work := t.TempDir()
	store, url := fileStore(t, work, "prod")
	for _, kind := range []string{buildid.Executable, buildid.DebugInfo} {
		key, ok := buildid.KeyFor(c.buildID, kind)
		if !ok {
			t.Fatalf("build-id %q refused", c.buildID)
		}
		putFile(t, store, key, c.prog)
	}
	putFile(t, store, "team-a/web-0/core-x", c.core)
	if err := os.Remove(c.prog); err != nil {
		t.Fatal(err)
	}
	// The core comes back out of the store, elsewhere.
	elsewhere := t.TempDir()
	rc, err := store.Read(context.Background(), "team-a/web-0/core-x")
	if err != nil {
		t.Fatal(err)
	}
	core := filepath.Join(elsewhere, "core")
	f, err := os.Create(core)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	f.Close()

	// Without the server gdb cannot name a frame: the test can fail.
	without := gdbFrames(t, []string{"DEBUGINFOD_URLS="}, elsewhere, "-batch", "-ex", "bt", "-c", core)
	if slices.Equal(without, c.frames) {
		t.Fatalf("gdb shows the same frames without the binary: %q", without)
	}

	server := startDebuginfod(t, "--storage-url", url)
	got := gdbFrames(t, []string{"DEBUGINFOD_URLS=" + server, "DEBUGINFOD_CACHE_PATH=" + filepath.Join(work, "cache")}, elsewhere,
		"-iex", "set debuginfod enabled on", "-batch", "-ex", "bt", "-c", core)
	if !slices.Equal(got, c.frames) {
		t.Errorf("frames through debuginfod:\n%q\nwith the binary:\n%q", got, c.frames)
	}
}

// TestDebuginfodRefusesWhatItDoesNotServe performs the requests a hostile
// page or a confused client could make.
func TestDebuginfodRefusesWhatItDoesNotServe(t *testing.T) {
	work := t.TempDir()
	store, url := fileStore(t, work, "prod")
	id := strings.Repeat("ab", 20)
	key, _ := buildid.KeyFor(id, buildid.Executable)
	secret := filepath.Join(work, "secret")
	if err := os.WriteFile(secret, []byte("not for the debugger"), 0o600); err != nil {
		t.Fatal(err)
	}
	putFile(t, store, key, secret)
	putFile(t, store, "team-a/web-0/core-x.json", secret)
	// A symlink planted in the bucket directory under a build-id.
	evil := strings.Repeat("cd", 20)
	if err := os.MkdirAll(filepath.Join(work, "bucket", "prod", "buildid", evil), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, filepath.Join(work, "bucket", "prod", "buildid", evil, "executable")); err != nil {
		t.Fatal(err)
	}
	server := startDebuginfod(t, "--storage-url", url)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(server, "http://"))

	for _, tc := range []struct {
		method, path, host string
		want               int
	}{
		{"GET", "/buildid/" + id + "/executable", "", 200},
		{"HEAD", "/buildid/" + id + "/executable", "", 200},
		{"GET", "/buildid/" + strings.ToUpper(id) + "/executable", "", 200},
		{"GET", "/buildid/" + id + "/executable", "localhost:" + port, 200},
		{"GET", "/buildid/" + id + "/debuginfo", "", 404},
		{"GET", "/buildid/" + id + "/source/etc/passwd", "", 404},
		{"GET", "/buildid/" + id + "/source", "", 404},
		{"GET", "/buildid/" + id + "/section/.text", "", 404},
		{"GET", "/buildid/../team-a/web-0/core-x.json", "", 404},
		{"GET", "/buildid/..%2fteam-a/executable", "", 404},
		{"GET", "/buildid/" + id + "%2f..%2f..%2fteam-a/executable", "", 404},
		{"GET", "/buildid/" + id[:6] + "/executable", "", 404},
		{"GET", "/buildid/" + strings.Repeat("a", 130) + "/executable", "", 404},
		{"GET", "/buildid/" + id + "0/executable", "", 404},
		{"GET", "/buildid/" + strings.Repeat("zz", 20) + "/executable", "", 404},
		{"GET", "/buildid/" + id + "/executable?x=1", "", 404},
		{"GET", "/buildid/" + evil + "/executable", "", 404},
		{"POST", "/buildid/" + id + "/executable", "", 405},
		{"GET", "/buildid/" + id + "/executable", "evil.example:" + port, 403},
		{"GET", "/buildid/" + id + "/executable", "127.0.0.1:1", 403},
	} {
		req, err := http.NewRequest(tc.method, server+tc.path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tc.host != "" {
			req.Host = tc.host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s (Host %q): %d, want %d", tc.method, tc.path, tc.host, resp.StatusCode, tc.want)
		}
		if tc.want != 200 && strings.Contains(string(body), "not for the debugger") {
			t.Errorf("%s %s served the file", tc.method, tc.path)
		}
		if tc.want == 200 && tc.method == "GET" && string(body) != "not for the debugger" {
			t.Errorf("%s %s: body %q", tc.method, tc.path, body)
		}
		if tc.want == 200 && resp.ContentLength != int64(len("not for the debugger")) {
			t.Errorf("%s %s: Content-Length %d", tc.method, tc.path, resp.ContentLength)
		}
	}
}

func TestDebuginfodBindsLoopbackOnly(t *testing.T) {
	server := startDebuginfod(t, "--storage-url", "file://"+t.TempDir())
	host, _, err := net.SplitHostPort(strings.TrimPrefix(server, "http://"))
	if err != nil || host != "127.0.0.1" {
		t.Errorf("serves at %s", server)
	}
}
