package serve

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coredog/coredog/internal/wire"
)

type fileModules map[string]string

func (m fileModules) Open(id string) (*os.File, error) {
	p, ok := m[id]
	if !ok {
		return nil, os.ErrNotExist
	}
	return os.Open(p)
}

// TestModuleRoutes: the module list of a registered dump, a collected
// build-id in whole and in ranges, and the one 404 for everything else: a
// build-id no dump lists (even one the store holds), a malformed one, an
// escaped path, an unknown dump.
func TestModuleRoutes(t *testing.T) {
	held, listed := strings.Repeat("ab", 20), strings.Repeat("cd", 20)
	path := filepath.Join(t.TempDir(), "lib")
	if err := os.WriteFile(path, []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	reg := NewRegistry()
	reg.Add(Entry{Name: "core-1", Modules: []wire.Module{
		{Path: "/lib/x.so", BuildID: listed, Collected: true},
		{Path: "/lib/y.so", BuildID: held, Reason: wire.ModuleProcessGone},
	}})
	h := newHandler(Options{Registry: reg, Modules: fileModules{held: path, listed: path}, Logger: testLogger(t)}.withDefaults())
	get := func(target, rng string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, target, nil)
		if rng != "" {
			r.Header.Set("Range", rng)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := get(wire.DumpsPath+"core-1"+wire.ModulesSuffix, "")
	var mods []wire.Module
	if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &mods) != nil || len(mods) != 2 {
		t.Fatalf("module list: %d %q", w.Code, w.Body.String())
	}
	if w := get(wire.BuildIDPath+listed, ""); w.Code != http.StatusOK || w.Body.String() != "0123456789" {
		t.Errorf("listed build-id: %d %q", w.Code, w.Body.String())
	}
	if w := get(wire.BuildIDPath+listed, "bytes=2-4"); w.Code != http.StatusPartialContent || w.Body.String() != "234" || w.Header().Get("Content-Range") != "bytes 2-4/10" {
		t.Errorf("ranged read: %d %q %q", w.Code, w.Body.String(), w.Header().Get("Content-Range"))
	}
	for _, target := range []string{
		wire.BuildIDPath + held, // held by the store, but no dump lists it collected
		wire.BuildIDPath + strings.ToUpper(listed),
		wire.BuildIDPath + "..%2F..%2Fetc%2Fpasswd",
		wire.BuildIDPath + listed + "/x",
		wire.DumpsPath + "core-2" + wire.ModulesSuffix,
		wire.DumpsPath + "..%2Fcore-1" + wire.ModulesSuffix,
	} {
		if w := get(target, ""); w.Code != http.StatusNotFound || w.Body.String() != notFoundBody {
			t.Errorf("%s: %d %q, want the one 404", target, w.Code, w.Body.String())
		}
	}
}
