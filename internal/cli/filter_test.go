package cli

import (
	"strings"
	"testing"
	"time"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestParseSince(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{in: "30m", want: 30 * time.Minute},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "7d", want: 7 * 24 * time.Hour},
		{in: "0s", wantErr: true},
		{in: "-1h", wantErr: true},
		{in: "d", wantErr: true},
		{in: "1.5d", wantErr: true},
		{in: "yesterday", wantErr: true},
	} {
		got, err := ParseSince(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseSince(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseSignal(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		wantErr  bool
	}{
		{in: "SIGSEGV", want: "SIGSEGV"},
		{in: "segv", want: "SIGSEGV"},
		{in: "sigabrt", want: "SIGABRT"},
		{in: "iot", want: "SIGABRT"},
		{in: "11", want: "SIGSEGV"},
		{in: "6", want: "SIGABRT"},
		{in: "40", want: "SIG40"},
		{in: "0", wantErr: true},
		{in: "200", wantErr: true},
		{in: "SIG", wantErr: true},
		{in: "seg-v", wantErr: true},
	} {
		got, err := ParseSignal(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseSignal(%q) = %q, %v; want %q, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNewFilterErrors(t *testing.T) {
	for _, tc := range []struct {
		pod, workload, since, signal string
		want                         string
	}{
		{pod: "a/b/c", want: "--pod"},
		{pod: "/web-0", want: "--pod"},
		{workload: "team-a/gizmo/web", want: "not a workload kind"},
		{workload: "a/b/c/d", want: "--workload"},
		{workload: "deployment/", want: "--workload"},
		{since: "forever", want: "--since"},
		{signal: "?", want: "--signal"},
	} {
		_, err := NewFilter(tc.pod, tc.workload, tc.since, tc.signal, now)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewFilter(%q, %q, %q, %q) error = %v, want one mentioning %q", tc.pod, tc.workload, tc.since, tc.signal, err, tc.want)
		}
	}
}

func TestFilterMatch(t *testing.T) {
	web := testDump("web", time.Hour)
	api := testDump("api", 3*24*time.Hour, withPod("team-b", "api-7c9-x2", "Deployment", "api"), withSignal(6, "SIGABRT"))
	bare := testDump("bare", 10*time.Minute, withPod("team-a", "one-off", "", ""))
	orphan := testDump("orphan", time.Minute, withPod("", "", "", ""))
	annotated := testDump("annotated", time.Minute, withPod("team-c", "job-x", "", ""), func(cd *coredogv1.CoreDump) {
		cd.Annotations = map[string]string{coredogv1.AnnotationWorkload: "Job/nightly"}
	})
	all := []coredogv1.CoreDump{web, api, bare, orphan, annotated}

	for _, tc := range []struct {
		name                         string
		pod, workload, since, signal string
		want                         []string
	}{
		{name: "no filter", want: []string{"web", "api", "bare", "orphan", "annotated"}},
		{name: "pod name", pod: "web-0", want: []string{"web"}},
		{name: "pod with namespace", pod: "team-b/api-7c9-x2", want: []string{"api"}},
		{name: "pod in wrong namespace", pod: "team-a/api-7c9-x2"},
		{name: "workload name", workload: "api", want: []string{"api"}},
		{name: "workload kind/name", workload: "statefulset/web", want: []string{"web"}},
		{name: "workload short kind", workload: "sts/web", want: []string{"web"}},
		{name: "workload wrong kind", workload: "deployment/web"},
		{name: "workload namespace/name", workload: "team-b/api", want: []string{"api"}},
		{name: "workload namespace/kind/name", workload: "team-b/Deployment/api", want: []string{"api"}},
		{name: "workload from annotation", workload: "job/nightly", want: []string{"annotated"}},
		{name: "since", since: "2h", want: []string{"web", "bare", "orphan", "annotated"}},
		{name: "since days", since: "4d", want: []string{"web", "api", "bare", "orphan", "annotated"}},
		{name: "signal name", signal: "abrt", want: []string{"api"}},
		{name: "signal number", signal: "11", want: []string{"web", "bare", "orphan", "annotated"}},
		{name: "combined", pod: "web-0", signal: "SIGSEGV", since: "30m"},
	} {
		f, err := NewFilter(tc.pod, tc.workload, tc.since, tc.signal, now)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for i := range all {
			if f.Match(&all[i]) {
				got = append(got, all[i].Name)
			}
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: matched %v, want %v", tc.name, got, tc.want)
		}
	}
}
