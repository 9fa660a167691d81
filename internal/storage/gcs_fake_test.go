package storage

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/fsouza/fake-gcs-server/fakestorage"
)

// The fake GCS server (fake-gcs-server) runs in a child process, this test
// binary again, for the reason the fake S3 server does: it keeps objects and
// upload sessions in memory, which must not count against the client's heap
// that checkRoundTrip measures. In front of it, gcsFront checks the
// resumable-upload protocol, answers what the fake does not implement
// (status queries, which the fake would take as the end of the upload),
// injects failures, issues OAuth2 tokens and counts.
const (
	fakeGCSEnv    = "COREDOG_STORAGE_TEST_FAKEGCS"
	fakeGCSBucket = "cores"
	// Uploads whose object name contains one of these markers fail once:
	// gcsFailChunk answers the second chunk 503 without storing it,
	// gcsLoseReply stores the second chunk and closes the connection
	// without an answer, gcsLoseFinal does that to the last chunk.
	gcsFailChunk = "fail-chunk"
	gcsLoseReply = "lose-reply"
	gcsLoseFinal = "lose-final"
	// gcsHangFinal stores the last chunk and then holds the request until
	// the client gives up.
	gcsHangFinal = "hang-final"
	// Buckets that answer every request with an error.
	gcsForbiddenBucket = "forbidden"
	gcsUnauthBucket    = "unauthorized"
	gcsBrokenBucket    = "broken"
	gcsTokenPath       = "/-/token"
	gcsStatsPath       = "/-/stats"
)

func init() {
	if os.Getenv(fakeGCSEnv) != "" {
		serveFakeGCS()
	}
}

func serveFakeGCS() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true, PublicHost: l.Addr().String(), Writer: io.Discard})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fake.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: fakeGCSBucket})
	fmt.Printf("http://%s\n", l.Addr())
	// The parent closes stdin when it is done, or dies.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	front := &gcsFront{next: fake.HTTPHandler(), sessions: map[string]*frontSession{}, tokens: map[string]string{}, auth: map[string]bool{}}
	_ = http.Serve(l, front)
	os.Exit(1)
}

// gcsFront stands in front of the fake.
type gcsFront struct {
	next     http.Handler
	mu       sync.Mutex
	sessions map[string]*frontSession // by upload_id
	tokens   map[string]string        // access token -> the client_email it was issued to
	auth     map[string]bool          // who authenticated storage requests ("anonymous": nobody)
	broken   int                      // requests to gcsBrokenBucket
}

type frontSession struct {
	Name string
	// Held is what the fake stored; Chunks the sizes of the chunks it
	// stored, in order.
	Held      int64
	Chunks    []int64
	Puts      int // chunk requests, failed or not
	Queries   int // status queries
	Injected  int
	Done      bool
	Cancelled bool
	final     []byte
}

// fakeGCSStats is what gcsStatsPath reports.
type fakeGCSStats struct {
	Sessions []frontSession
	Auth     []string
	Broken   int
	// Tokens counts the tokens issued to each account.
	Tokens map[string]int
}

func (f *gcsFront) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case gcsTokenPath:
		f.issueToken(w, r)
		return
	case gcsStatsPath:
		f.mu.Lock()
		st := fakeGCSStats{Auth: slices.Sorted(maps.Keys(f.auth)), Broken: f.broken, Tokens: map[string]int{}}
		for _, who := range f.tokens {
			st.Tokens[who]++
		}
		for _, s := range f.sessions {
			st.Sessions = append(st.Sessions, *s)
		}
		f.mu.Unlock()
		_ = json.NewEncoder(w).Encode(st)
		return
	}
	f.noteAuth(r)
	switch {
	case strings.Contains(r.URL.Path, "/b/"+gcsForbiddenBucket+"/"):
		http.Error(w, `{"error":{"code":403,"message":"coredog@p.iam.gserviceaccount.com does not have storage.objects.create access to the Google Cloud Storage object."}}`, http.StatusForbidden)
		return
	case strings.Contains(r.URL.Path, "/b/"+gcsUnauthBucket+"/"):
		http.Error(w, `{"error":{"code":401,"message":"Invalid Credentials"}}`, http.StatusUnauthorized)
		return
	case strings.Contains(r.URL.Path, "/b/"+gcsBrokenBucket+"/"):
		f.mu.Lock()
		f.broken++
		f.mu.Unlock()
		http.Error(w, `{"error":{"code":503,"message":"Backend Error"}}`, http.StatusServiceUnavailable)
		return
	}
	q := r.URL.Query()
	if !strings.HasPrefix(r.URL.Path, "/upload/storage/v1/b/") || q.Get("uploadType") != "resumable" {
		f.next.ServeHTTP(w, r)
		return
	}
	id := q.Get("upload_id")
	if id == "" && r.Method == http.MethodPost {
		rec := httptest.NewRecorder()
		f.next.ServeHTTP(rec, r)
		if loc, err := url.Parse(rec.Header().Get("Location")); err == nil && loc.Query().Get("upload_id") != "" {
			f.mu.Lock()
			f.sessions[loc.Query().Get("upload_id")] = &frontSession{Name: q.Get("name")}
			f.mu.Unlock()
		}
		copyResponse(w, rec)
		return
	}
	f.mu.Lock()
	s := f.sessions[id]
	f.mu.Unlock()
	if s == nil {
		http.Error(w, "unknown upload session", http.StatusNotFound)
		return
	}
	switch r.Method {
	case http.MethodDelete:
		f.mu.Lock()
		s.Cancelled = true
		f.mu.Unlock()
		f.next.ServeHTTP(w, r)
	case http.MethodPut, http.MethodPost:
		// GCS takes chunks by PUT or POST; Google's SDK posts them.
		f.chunk(w, r, s)
	default:
		http.Error(w, "method not allowed on an upload session", http.StatusMethodNotAllowed)
	}
}

// chunk checks a chunk or status query against the session and passes
// chunks on to the fake, failing some on purpose.
func (f *gcsFront) chunk(w http.ResponseWriter, r *http.Request, s *frontSession) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	rng := r.Header.Get("Content-Range")
	f.mu.Lock()
	if rng == "bytes */*" && len(body) == 0 {
		s.Queries++
		done, final, held := s.Done, s.final, s.Held
		f.mu.Unlock()
		if done {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(final)
			return
		}
		if held > 0 {
			w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", held-1))
		}
		w.WriteHeader(http.StatusPermanentRedirect)
		return
	}
	s.Puts++
	start, total, ok := parseChunkRange(rng, len(body))
	final := total >= 0
	if ok && len(body) > 0 && start+int64(len(body)) <= s.Held && (s.Done == final) {
		// A chunk sent again after its answer was lost: GCS answers as it
		// did, without storing it twice.
		done, result, held := s.Done, s.final, s.Held
		f.mu.Unlock()
		if done {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(result)
			return
		}
		w.Header().Set("Range", fmt.Sprintf("bytes=0-%d", held-1))
		w.Header().Set("X-Http-Status-Code-Override", "308")
		w.WriteHeader(http.StatusOK)
		return
	}
	switch {
	case !ok || s.Done || s.Cancelled:
		f.mu.Unlock()
		http.Error(w, "bad Content-Range "+rng, http.StatusBadRequest)
		return
	case start != s.Held:
		f.mu.Unlock()
		http.Error(w, fmt.Sprintf("chunk starts at %d, the session holds %d", start, s.Held), http.StatusBadRequest)
		return
	case !final && len(body)%gcsChunkAlign != 0:
		f.mu.Unlock()
		http.Error(w, fmt.Sprintf("a chunk of %d bytes is not a multiple of 256 KiB", len(body)), http.StatusBadRequest)
		return
	}
	second := len(s.Chunks) == 1
	inject := s.Injected == 0 && (second && strings.Contains(s.Name, gcsFailChunk))
	lose := s.Injected == 0 && (second && strings.Contains(s.Name, gcsLoseReply) || final && strings.Contains(s.Name, gcsLoseFinal))
	hang := final && strings.Contains(s.Name, gcsHangFinal)
	if inject || lose || hang {
		s.Injected++
	}
	f.mu.Unlock()
	if inject {
		http.Error(w, `{"error":{"code":503,"message":"injected by the test"}}`, http.StatusServiceUnavailable)
		return
	}
	r.Body = io.NopCloser(strings.NewReader(string(body)))
	rec := httptest.NewRecorder()
	f.next.ServeHTTP(rec, r)
	code := rec.Code
	if rec.Header().Get("X-Http-Status-Code-Override") == "308" {
		// The answer to a client that asked for no 308 (X-GUploader-No-308).
		code = http.StatusPermanentRedirect
	}
	f.mu.Lock()
	switch code {
	case http.StatusOK, http.StatusCreated:
		s.Done, s.final = true, rec.Body.Bytes()
	}
	switch code {
	case http.StatusOK, http.StatusCreated, http.StatusPermanentRedirect:
		// An empty last request only completes the object.
		if len(body) > 0 {
			s.Held += int64(len(body))
			s.Chunks = append(s.Chunks, int64(len(body)))
		}
	}
	f.mu.Unlock()
	if hang {
		<-r.Context().Done()
		return
	}
	if lose {
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
	}
	copyResponse(w, rec)
}

// parseChunkRange reads "bytes a-b/total" or "bytes */total" (total may be
// "*": -1) and checks it against the body's length.
func parseChunkRange(h string, n int) (start, total int64, ok bool) {
	spec, found := strings.CutPrefix(h, "bytes ")
	rng, tot, found2 := strings.Cut(spec, "/")
	if !found || !found2 {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		t, err := strconv.ParseInt(tot, 10, 64)
		if err != nil {
			return 0, 0, false
		}
		total = t
	}
	if rng == "*" {
		return total, total, n == 0 && total >= 0
	}
	a, b, found := strings.Cut(rng, "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if !found || err1 != nil || err2 != nil || last-first+1 != int64(n) || total >= 0 && last+1 != total {
		return 0, 0, false
	}
	return first, total, true
}

// issueToken answers a JWT-bearer grant with a token tied to the JWT's
// issuer (the service account's email).
func (f *gcsFront) issueToken(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	var claims struct {
		Iss string `json:"iss"`
	}
	if len(parts) != 3 {
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err != nil || json.Unmarshal(b, &claims) != nil {
		http.Error(w, `{"error":"invalid_grant"}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	tok := fmt.Sprintf("token-%d", len(f.tokens)+1)
	f.tokens[tok] = claims.Iss
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":3600}`, tok)
}

func (f *gcsFront) noteAuth(r *http.Request) {
	who := "anonymous"
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		f.mu.Lock()
		who = f.tokens[tok]
		f.mu.Unlock()
		if who == "" {
			who = "unknown token"
		}
	}
	f.mu.Lock()
	f.auth[who] = true
	f.mu.Unlock()
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	maps.Copy(w.Header(), rec.Header())
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

func fakeStats(t *testing.T, endpoint string) fakeGCSStats {
	t.Helper()
	resp, err := http.Get(endpoint + gcsStatsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st fakeGCSStats
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// session returns the one upload session of name.
func (st fakeGCSStats) session(t *testing.T, name string) frontSession {
	t.Helper()
	var found []frontSession
	for _, s := range st.Sessions {
		if s.Name == name {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d upload sessions of %s, want 1", len(found), name)
	}
	return found[0]
}

func (st fakeGCSStats) sessionsOf(name string) int {
	n := 0
	for _, s := range st.Sessions {
		if s.Name == name {
			n++
		}
	}
	return n
}

// startFakeGCS starts the server process and returns its endpoint.
func startFakeGCS(t *testing.T) string { return startChildServer(t, fakeGCSEnv, "fake GCS") }
