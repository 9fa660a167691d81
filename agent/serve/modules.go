package serve

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/wire"
)

// serveModules answers the module list of a registered dump.
func (h *handler) serveModules(w http.ResponseWriter, r *http.Request, name string) int {
	if r.TLS != nil && !peerIs(r.TLS.PeerCertificates, h.clientCN) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return http.StatusForbidden
	}
	entry, ok := h.reg.Get(name)
	if !wire.ValidName(name) || !ok {
		notFound(w)
		return http.StatusNotFound
	}
	mods := entry.Modules
	if mods == nil {
		mods = []wire.Module{}
	}
	body, err := json.Marshal(mods)
	if err != nil || len(body) > wire.MaxModuleListBytes {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	return http.StatusOK
}

// serveBuildID answers the file collected for a build-id, while a
// registered dump lists it as collected; everything else is the one 404.
func (h *handler) serveBuildID(w http.ResponseWriter, r *http.Request, id string) int {
	if r.TLS != nil && !peerIs(r.TLS.PeerCertificates, h.clientCN) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return http.StatusForbidden
	}
	if h.modules == nil || !buildid.Valid(id) || !h.reg.Collected(id) {
		notFound(w)
		return http.StatusNotFound
	}
	if !h.takeSlot(w) {
		return http.StatusServiceUnavailable
	}
	defer h.releaseSlot()
	f, err := h.modules.Open(id)
	if err != nil {
		h.log.V(1).Info("Not serving module", "buildID", id, "err", err.Error())
		notFound(w)
		return http.StatusNotFound
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || st.Size() > wire.MaxModuleBytes {
		notFound(w)
		return http.StatusNotFound
	}
	// Ranges are served: the manager reads a module's headers and notes
	// to check its build-id before it fetches the whole file.
	w.Header().Set("Content-Type", "application/octet-stream")
	out := &deadlineWriter{w: w, rc: http.NewResponseController(w), timeout: h.timeout, served: h.metrics.servedBytes, sum: wire.NewStreamChecksum()}
	http.ServeContent(deadlineResponse{ResponseWriter: w, out: out}, r, "", time.Time{}, io.NewSectionReader(f, 0, st.Size()))
	return http.StatusOK
}

// deadlineResponse writes a response body through a deadlineWriter, so
// that a client that stops reading lets go of the file.
type deadlineResponse struct {
	http.ResponseWriter
	out *deadlineWriter
}

func (d deadlineResponse) Write(p []byte) (int, error) { return d.out.Write(p) }
