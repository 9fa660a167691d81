package storage

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeAzure answers the Blob service REST calls the Azure store makes (Put
// Block, Put Block List, Get Blob, Get Blob Properties, Delete Blob, and
// Put Blob, which gocloud made for small blobs) for
// one account, keeping blocks and blobs as files so that what it stores
// does not count against the client's heap, which the round trip measures.
type fakeAzure struct {
	t       *testing.T
	srv     *httptest.Server
	dir     string
	account string

	mu     sync.Mutex
	seq    int
	blocks map[string]map[string]string // blob name -> block ID -> file
	blobs  map[string]*fakeBlob

	// refuse, when non-zero, is the status every request gets.
	refuse atomic.Int32
	// putBlocks counts Put Block requests; inFlight and maxInFlight their
	// concurrency.
	putBlocks, inFlight, maxInFlight atomic.Int32
}

type fakeBlob struct {
	file, contentType string
	size              int64
	metadata          map[string]string
	blockSizes        []int64
}

func newFakeAzure(t *testing.T, account string) *fakeAzure {
	f := &fakeAzure{t: t, dir: t.TempDir(), account: account, blocks: map[string]map[string]string{}, blobs: map[string]*fakeBlob{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

// host is the server's host:port, for the URL's domain=.
func (f *fakeAzure) host() string { return strings.TrimPrefix(f.srv.URL, "http://") }

// blob returns a committed blob by its (escaped) name.
func (f *fakeAzure) blob(name string) *fakeBlob {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.blobs[name]
}

// blobNames lists the committed blobs.
func (f *fakeAzure) blobNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.blobs {
		names = append(names, n)
	}
	return names
}

func (f *fakeAzure) serve(w http.ResponseWriter, r *http.Request) {
	if code := int(f.refuse.Load()); code != 0 {
		f.fail(w, r, code, "AuthorizationPermissionMismatch")
		return
	}
	if !strings.HasPrefix(r.Header.Get("Authorization"), "SharedKey "+f.account+":") {
		f.fail(w, r, http.StatusForbidden, "AuthenticationFailed")
		return
	}
	// /ACCOUNT/CONTAINER/BLOB
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) != 3 || parts[0] != f.account || parts[1] == "" || parts[2] == "" {
		f.fail(w, r, http.StatusBadRequest, "InvalidUri")
		return
	}
	name := parts[1] + "/" + parts[2]
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPut && q.Get("comp") == "block":
		f.putBlock(w, r, name, q.Get("blockid"))
	case r.Method == http.MethodPut && q.Get("comp") == "blocklist":
		f.putBlockList(w, r, name)
	case r.Method == http.MethodPut && q.Get("comp") == "":
		// Put Blob, which gocloud's azureblob sent for small blobs: one
		// block, staged and committed at once.
		id := "put-blob"
		f.putBlock(httptest.NewRecorder(), r, name, id)
		body := `<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>` + id + `</Latest></BlockList>`
		r.Body = io.NopCloser(strings.NewReader(body))
		f.putBlockList(w, r, name)
	case (r.Method == http.MethodGet || r.Method == http.MethodHead) && q.Get("comp") == "":
		f.get(w, r, name)
	case r.Method == http.MethodDelete && q.Get("comp") == "":
		f.mu.Lock()
		b := f.blobs[name]
		delete(f.blobs, name)
		f.mu.Unlock()
		if b == nil {
			f.fail(w, r, http.StatusNotFound, "BlobNotFound")
			return
		}
		_ = os.Remove(b.file)
		w.WriteHeader(http.StatusAccepted)
	default:
		f.fail(w, r, http.StatusNotImplemented, "NotImplemented")
	}
}

func (f *fakeAzure) putBlock(w http.ResponseWriter, r *http.Request, name, id string) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		m := f.maxInFlight.Load()
		if n <= m || f.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	f.putBlocks.Add(1)
	if id == "" {
		f.fail(w, r, http.StatusBadRequest, "InvalidQueryParameterValue")
		return
	}
	file := f.newFile()
	out, err := os.Create(file)
	if err != nil {
		f.t.Error(err)
		return
	}
	written, err := io.Copy(out, r.Body)
	_ = out.Close()
	if err != nil || strconv.FormatInt(written, 10) != r.Header.Get("Content-Length") {
		_ = os.Remove(file)
		f.fail(w, r, http.StatusBadRequest, "InvalidBlobOrBlock")
		return
	}
	f.mu.Lock()
	if f.blocks[name] == nil {
		f.blocks[name] = map[string]string{}
	}
	f.blocks[name][id] = file
	f.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
}

func (f *fakeAzure) putBlockList(w http.ResponseWriter, r *http.Request, name string) {
	var list struct {
		Latest      []string `xml:"Latest"`
		Committed   []string `xml:"Committed"`
		Uncommitted []string `xml:"Uncommitted"`
	}
	if err := xml.NewDecoder(r.Body).Decode(&list); err != nil {
		f.fail(w, r, http.StatusBadRequest, "InvalidXmlDocument")
		return
	}
	if len(list.Committed)+len(list.Uncommitted) > 0 {
		f.fail(w, r, http.StatusNotImplemented, "NotImplemented")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// If-None-Match: * commits only a new blob, as the Blob service does
	// (409 BlobAlreadyExists); the staged blocks stay uncommitted.
	if r.Header.Get("If-None-Match") == "*" && f.blobs[name] != nil {
		f.fail(w, r, http.StatusConflict, "BlobAlreadyExists")
		return
	}
	staged := f.blocks[name]
	b := &fakeBlob{file: f.newFileLocked(), contentType: r.Header.Get("x-ms-blob-content-type"), metadata: map[string]string{}}
	out, err := os.Create(b.file)
	if err != nil {
		f.t.Error(err)
		return
	}
	defer out.Close()
	for _, id := range list.Latest {
		file, ok := staged[id]
		if !ok {
			f.fail(w, r, http.StatusBadRequest, "InvalidBlockList")
			return
		}
		in, err := os.Open(file)
		if err != nil {
			f.t.Error(err)
			return
		}
		n, err := io.Copy(out, in)
		_ = in.Close()
		if err != nil {
			f.t.Error(err)
			return
		}
		b.size += n
		b.blockSizes = append(b.blockSizes, n)
	}
	for k, v := range r.Header {
		if m, ok := strings.CutPrefix(strings.ToLower(k), "x-ms-meta-"); ok {
			b.metadata[m] = v[0]
		}
	}
	// Committing discards the blob's other uncommitted blocks.
	for _, file := range staged {
		_ = os.Remove(file)
	}
	delete(f.blocks, name)
	f.blobs[name] = b
	w.Header().Set("ETag", `"0x1"`)
	w.Header().Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
	w.WriteHeader(http.StatusCreated)
}

func (f *fakeAzure) get(w http.ResponseWriter, r *http.Request, name string) {
	b := f.blob(name)
	if b == nil {
		f.fail(w, r, http.StatusNotFound, "BlobNotFound")
		return
	}
	in, err := os.Open(b.file)
	if err != nil {
		f.t.Error(err)
		return
	}
	defer in.Close()
	h := w.Header()
	h.Set("Content-Type", b.contentType)
	h.Set("Content-Length", strconv.FormatInt(b.size, 10))
	h.Set("x-ms-blob-type", "BlockBlob")
	h.Set("ETag", `"0x1"`)
	h.Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
	h.Set("x-ms-creation-time", time.Now().UTC().Format(http.TimeFormat))
	for k, v := range b.metadata {
		h.Set("x-ms-meta-"+k, v)
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = io.Copy(w, in)
	}
}

// fail answers as the Blob service does: the code in a header, and for
// requests with a body in XML.
func (f *fakeAzure) fail(w http.ResponseWriter, r *http.Request, status int, code string) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("x-ms-error-code", code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>answered by the test</Message></Error>`, code)
	}
}

func (f *fakeAzure) newFile() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.newFileLocked()
}

func (f *fakeAzure) newFileLocked() string {
	f.seq++
	return filepath.Join(f.dir, strconv.Itoa(f.seq))
}
