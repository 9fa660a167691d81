package app

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// request is what the fake API server saw of one request.
type request struct {
	method, path, query, contentType, accept string
}

// fakeAPIServer answers every request with one canned reply per path and
// method, and records the requests.
type fakeAPIServer struct {
	mu      sync.Mutex
	seen    []request
	replies map[string]reply
}

type reply struct {
	code int
	body any
}

func (f *fakeAPIServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	f.mu.Lock()
	f.seen = append(f.seen, request{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Accept")})
	rep, ok := f.replies[r.Method+" "+r.URL.Path]
	f.mu.Unlock()
	if !ok {
		rep = reply{http.StatusNotFound, metav1.Status{Status: metav1.StatusFailure, Reason: metav1.StatusReasonNotFound, Code: http.StatusNotFound}}
	}
	if st, ok := rep.body.(metav1.Status); ok {
		st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
		rep.body = st
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(rep.code)
	_ = json.NewEncoder(w).Encode(rep.body)
}

func (f *fakeAPIServer) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]request(nil), f.seen...)
}

func statusReply(code int, reason metav1.StatusReason) reply {
	return reply{code, metav1.Status{Status: metav1.StatusFailure, Reason: reason, Code: int32(code)}}
}

// TestKubeClientRequests pins the requests the agent makes, their content
// types, and that API errors keep their reasons (AlreadyExists, NotFound,
// Conflict), on which the agent branches.
func TestKubeClientRequests(t *testing.T) {
	const (
		dumps  = "/apis/coredog.io/v1alpha1/namespaces/ns/coredumps"
		leases = "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
	)
	api := &fakeAPIServer{replies: map[string]reply{
		"POST " + dumps:                  statusReply(http.StatusConflict, metav1.StatusReasonAlreadyExists),
		"GET " + dumps + "/core-1":       {http.StatusOK, coredogv1.CoreDump{TypeMeta: metav1.TypeMeta{Kind: "CoreDump", APIVersion: "coredog.io/v1alpha1"}, ObjectMeta: metav1.ObjectMeta{Name: "core-1", Namespace: "ns"}, Status: coredogv1.CoreDumpStatus{Phase: coredogv1.PhaseUploaded}}},
		"GET " + dumps:                   {http.StatusOK, coredogv1.CoreDumpList{TypeMeta: metav1.TypeMeta{Kind: "CoreDumpList", APIVersion: "coredog.io/v1alpha1"}, ListMeta: metav1.ListMeta{ResourceVersion: "7"}}},
		"PUT " + leases + "/p.n":         statusReply(http.StatusConflict, metav1.StatusReasonConflict),
		"POST " + leases:                 {http.StatusCreated, coordinationv1.Lease{TypeMeta: metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}}},
		"GET " + leases + "/p.elsewhere": {http.StatusOK, coordinationv1.Lease{TypeMeta: metav1.TypeMeta{Kind: "Lease", APIVersion: "coordination.k8s.io/v1"}, ObjectMeta: metav1.ObjectMeta{Name: "p.elsewhere", ResourceVersion: "3"}}},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	k, err := newKubeClient(&rest.Config{Host: srv.URL, QPS: 50, Burst: 100}, NewScheme(), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	cd := &coredogv1.CoreDump{ObjectMeta: metav1.ObjectMeta{Name: "core-1", Namespace: "ns"}}
	if err := k.createDump(ctx, cd); !apierrors.IsAlreadyExists(err) {
		t.Errorf("create: %v, want AlreadyExists", err)
	}
	got, err := k.getDump(ctx, "ns", "core-1")
	if err != nil || got.Status.Phase != coredogv1.PhaseUploaded {
		t.Errorf("get: %v, %+v", err, got.Status)
	}
	sel := dumpSelector("n", "p").String()
	list, err := k.listDumps(ctx, "ns", metav1.ListOptions{FieldSelector: sel, ResourceVersion: "0"})
	if err != nil || list.ResourceVersion != "7" {
		t.Errorf("list: %v, %+v", err, list)
	}
	if w, err := k.watchDumps(ctx, "ns", metav1.ListOptions{FieldSelector: sel, ResourceVersion: "7", AllowWatchBookmarks: true}); err != nil {
		// The fake server answers the watch with a list, which ends it.
		t.Errorf("watch: %v", err)
	} else {
		w.Stop()
	}
	if _, err := k.getLease(ctx, "ns", "p.n"); !apierrors.IsNotFound(err) {
		t.Errorf("get lease: %v, want NotFound", err)
	}
	lease, err := k.getLease(ctx, "ns", "p.elsewhere")
	if err != nil || lease.ResourceVersion != "3" {
		t.Errorf("get lease: %v, %+v", err, lease)
	}
	if err := k.createLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "p.n", Namespace: "ns"}}); err != nil {
		t.Errorf("create lease: %v", err)
	}
	if err := k.updateLease(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "p.n", Namespace: "ns", ResourceVersion: "1"}}); !apierrors.IsConflict(err) {
		t.Errorf("update lease: %v, want Conflict", err)
	}

	const protobuf = "application/vnd.kubernetes.protobuf"
	want := []struct {
		method, path, query, contentType string
	}{
		{"POST", dumps, "", "application/json"},
		{"GET", dumps + "/core-1", "", ""},
		{"GET", dumps, "fieldSelector=spec.nodeName%3Dn%2Cspec.policyName%3Dp&resourceVersion=0", ""},
		{"GET", dumps, "allowWatchBookmarks=true&fieldSelector=spec.nodeName%3Dn%2Cspec.policyName%3Dp&resourceVersion=7&watch=true", ""},
		{"GET", leases + "/p.n", "", ""},
		{"GET", leases + "/p.elsewhere", "", ""},
		{"POST", leases, "", protobuf},
		{"PUT", leases + "/p.n", "", protobuf},
	}
	seen := api.requests()
	if len(seen) != len(want) {
		t.Fatalf("%d requests, want %d: %+v", len(seen), len(want), seen)
	}
	for i, w := range want {
		s := seen[i]
		if s.method != w.method || s.path != w.path || s.query != w.query || s.contentType != w.contentType {
			t.Errorf("request %d: %s %s?%s (%s), want %s %s?%s (%s)", i, s.method, s.path, s.query, s.contentType, w.method, w.path, w.query, w.contentType)
		}
		if strings.HasPrefix(s.path, leases) && !strings.HasPrefix(s.accept, protobuf) {
			t.Errorf("request %d: Accept %q, want protobuf first", i, s.accept)
		}
	}

	// One token bucket per client, each with the configuration's rate.
	limiters := map[any]bool{}
	for _, c := range []*rest.RESTClient{k.dumps, k.dumpList, k.leases} {
		rl := c.GetRateLimiter()
		if rl == nil || rl.QPS() != 50 {
			t.Errorf("rate limiter %v, want 50 per second", rl)
		}
		limiters[rl] = true
	}
	if len(limiters) != 3 {
		t.Errorf("%d distinct rate limiters, want 3", len(limiters))
	}
}

// TestDumpWatchAsksOnlyForItsNode: the agent's list and watch of CoreDumps
// carry its node and policy as field selectors, whatever the reflector
// passes, so that an agent is sent its own node's dumps only.
func TestDumpWatchAsksOnlyForItsNode(t *testing.T) {
	const dumps = "/apis/coredog.io/v1alpha1/namespaces/ns/coredumps"
	api := &fakeAPIServer{replies: map[string]reply{
		"GET " + dumps: {http.StatusOK, coredogv1.CoreDumpList{TypeMeta: metav1.TypeMeta{Kind: "CoreDumpList", APIVersion: "coredog.io/v1alpha1"}, ListMeta: metav1.ListMeta{ResourceVersion: "7"}}},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	k, err := newKubeClient(&rest.Config{Host: srv.URL, QPS: 50, Burst: 100}, NewScheme(), logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	w := newDumpWatch(k, "ns", dumpSelector("node-a", "p"), func(string, string) {})
	ctx := context.Background()
	if _, err := w.lw.ListWithContextFunc(ctx, metav1.ListOptions{ResourceVersion: "0"}); err != nil {
		t.Fatal(err)
	}
	if wi, err := w.lw.WatchFuncWithContext(ctx, metav1.ListOptions{ResourceVersion: "7"}); err == nil {
		wi.Stop()
	}
	reqs := api.requests()
	if len(reqs) != 2 {
		t.Fatalf("requests %+v", reqs)
	}
	for _, r := range reqs {
		q, err := url.ParseQuery(r.query)
		if err != nil || q.Get("fieldSelector") != "spec.nodeName=node-a,spec.policyName=p" {
			t.Errorf("%s %s?%s: the agent asks for other nodes' CoreDumps", r.method, r.path, r.query)
		}
	}
}
