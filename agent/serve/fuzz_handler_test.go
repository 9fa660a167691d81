package serve

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/coredog/coredog/internal/wire"

	"github.com/go-logr/logr"
)

// FuzzHandler sends arbitrary request targets and methods to the handler,
// with one real file registered: it must never panic, never serve anything
// but that file, and answer only with the codes the endpoint defines.
func FuzzHandler(f *testing.F) {
	dir := f.TempDir()
	path := filepath.Join(dir, "core")
	if err := os.WriteFile(path, []byte("registered core"), 0o600); err != nil {
		f.Fatal(err)
	}
	reg := NewRegistry()
	reg.Add(entryFor(f, "core-1", path))
	h := NewHandler(Options{Registry: reg, Logger: logr.Discard()})
	for _, seed := range []string{
		"/v1/dumps/core-1", "/v1/dumps/core-1?compression=gzip", "/v1/dumps/../../etc/passwd",
		"/v1/dumps/core-1%2F..%2F", "/v1/dumps/%00", "/healthz", "/v1/dumps/core-1?compression=zstd&compression=none",
		"/v1/dumps/" + string(make([]byte, 300)),
	} {
		f.Add("GET", seed)
	}
	f.Add("POST", "/v1/dumps/core-1")
	allowed := map[int]bool{200: true, 400: true, 403: true, 404: true, 405: true, 503: true}
	f.Fuzz(func(t *testing.T, method, target string) {
		req, err := http.NewRequest(method, "http://agent"+target, nil)
		if err != nil {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if !allowed[w.Code] {
			t.Fatalf("%s %q: status %d", method, target, w.Code)
		}
		if w.Code == http.StatusOK && req.URL.Path != wire.HealthPath && req.URL.EscapedPath() != wire.DumpsPath+"core-1" {
			t.Fatalf("%s %q served something", method, target)
		}
	})
}
