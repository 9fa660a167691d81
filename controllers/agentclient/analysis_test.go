package agentclient

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/wire"
)

// TestFetchAnalysisTakesItAsHostileInput: an agent's analysis is read up to
// wire.MaxAnalysisBytes, must be JSON of one, and comes back sanitised; what
// the agent wrote is never quoted into the error (errors reach the status).
func TestFetchAnalysisTakesItAsHostileInput(t *testing.T) {
	f := newFixture(t)
	huge := `{"outcome":"Complete","reason":"` + strings.Repeat("x", wire.MaxAnalysisBytes) + `"}`
	cases := []struct {
		name    string
		status  int
		body    string
		wantErr error
		check   func(t *testing.T, a *wire.Analysis)
	}{
		{"honest", 200, `{"outcome":"Complete","threads":1,"crashingThread":5,"stacks":[{"tid":5,"frames":[{"pc":"0x10","function":"main"}]}]}`, nil,
			func(t *testing.T, a *wire.Analysis) {
				if a.Outcome != coredogv1.AnalysisComplete || a.Stacks[0].Frames[0].Function != "main" {
					t.Errorf("got %+v", a)
				}
			}},
		{"over the bound", 200, huge, ErrBadAnalysis, nil},
		{"not JSON", 200, "<html>secret-token</html>", ErrBadAnalysis, nil},
		{"none", 404, "", ErrNotServed, nil},
		{"refused", 500, "secret-token", ErrRefused, nil},
		{"unknown outcome and escapes", 200, `{"outcome":"Pwned","reason":"a\u001b[2Jb","stacks":[{"tid":-1,"frames":[{"pc":"0xzz","function":"f\u202eg","line":-4}]}]}`, nil,
			func(t *testing.T, a *wire.Analysis) {
				if a.Outcome != coredogv1.AnalysisUnavailable || strings.ContainsAny(a.Reason, "\x1b") {
					t.Errorf("outcome %q reason %q", a.Outcome, a.Reason)
				}
				fr := a.Stacks[0].Frames[0]
				if a.Stacks[0].TID != 0 || fr.PC != "" || fr.Function != "f?g" || fr.Line != 0 {
					t.Errorf("not sanitised: %+v %+v", a.Stacks[0], fr)
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != wire.DumpsPath+"core-1"+wire.AnalysisSuffix {
					t.Errorf("path %q", r.URL.Path)
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{f.agentCert(t, testNode)}}
			srv.StartTLS()
			defer srv.Close()
			a, err := f.client.FetchAnalysis(context.Background(), srv.URL, testNode, "core-1")
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) || strings.Contains(err.Error(), "secret-token") {
					t.Fatalf("err = %v, want %v without the agent's words", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, a)
		})
	}
}
