package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// listFixture is four dumps: two of one signature in team-a's StatefulSet,
// one SIGABRT in team-b's Deployment, one skipped dump without a pod.
func listFixture() []coredogv1.CoreDump {
	dumps := []coredogv1.CoreDump{
		testDump("core-b", time.Hour),
		testDump("core-a", 3*time.Hour, withPod("team-b", "api-1", "Deployment", "api"), withSignal(6, "SIGABRT"), withSignature("fedcba987654")),
		testDump("core-c", 5*time.Minute, withPod("", "", "", ""), withPhase(coredogv1.PhaseSkipped, "Throttled", "rate limit")),
		testDump("core-d", 2*time.Minute, withPhase(coredogv1.PhasePending, "", "")),
	}
	sortDumps(dumps)
	return dumps
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

func TestRenderList(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    ListFormat
		want string
	}{
		{"plain", ListFormat{}, lines(
			"NAME     NAMESPACE   POD      CONTAINER   EXECUTABLE   SIGNAL    SIZE   PHASE                 AGE",
			"core-a   team-b      api-1    app         server       SIGABRT   43Mi   Uploaded              3h",
			"core-b   team-a      web-0    app         server       SIGSEGV   43Mi   Uploaded              60m",
			"core-c   <none>      <none>   <none>      server       SIGSEGV   43Mi   Skipped (Throttled)   5m",
			"core-d   team-a      web-0    app         server       SIGSEGV   43Mi   Pending               2m",
		)},
		{"no headers", ListFormat{NoHeaders: true}, lines(
			"core-a   team-b   api-1    app      server   SIGABRT   43Mi   Uploaded              3h",
			"core-b   team-a   web-0    app      server   SIGSEGV   43Mi   Uploaded              60m",
			"core-c   <none>   <none>   <none>   server   SIGSEGV   43Mi   Skipped (Throttled)   5m",
			"core-d   team-a   web-0    app      server   SIGSEGV   43Mi   Pending               2m",
		)},
		{"wide, all namespaces", ListFormat{Wide: true, WithNamespace: true}, lines(
			"NAME                    NAMESPACE   POD      CONTAINER   EXECUTABLE   SIGNAL    SIZE   PHASE                 AGE   NODE     SIGNATURE      WORKLOAD          LOCATION",
			"coredog-system/core-a   team-b      api-1    app         server       SIGABRT   43Mi   Uploaded              3h    node-1   fedcba987654   Deployment/api    s3://cores/prod/team-a/web-0/core-a.zst",
			"coredog-system/core-b   team-a      web-0    app         server       SIGSEGV   43Mi   Uploaded              60m   node-1   0123456789ab   StatefulSet/web   s3://cores/prod/team-a/web-0/core-b.zst",
			"coredog-system/core-c   <none>      <none>   <none>      server       SIGSEGV   43Mi   Skipped (Throttled)   5m    node-1   0123456789ab   <none>            <none>",
			"coredog-system/core-d   team-a      web-0    app         server       SIGSEGV   43Mi   Pending               2m    node-1   0123456789ab   StatefulSet/web   <none>",
		)},
	} {
		var b bytes.Buffer
		RenderList(&b, listFixture(), tc.f, now)
		if b.String() != tc.want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", tc.name, b.String(), tc.want)
		}
	}
}

func TestRenderListEscapes(t *testing.T) {
	cd := testDump("core-e", time.Minute, func(cd *coredogv1.CoreDump) { cd.Spec.Process.Executable = "evil\x1b]0;pwned\x07\tx" })
	var b bytes.Buffer
	RenderList(&b, []coredogv1.CoreDump{cd}, ListFormat{NoHeaders: true}, now)
	if strings.ContainsAny(b.String(), "\x1b\x07") || !strings.Contains(b.String(), `evil\x1b]0;pwned\a\tx`) {
		t.Errorf("control characters reached the output: %q", b.String())
	}
}

func TestGroupDumps(t *testing.T) {
	extra := []coredogv1.CoreDump{
		// Same signature, another workload, the oldest of its group.
		testDump("core-e", 5*time.Hour, withPod("team-c", "web-x", "Deployment", "web")),
		// Not an ELF core: grouped by executable and signal.
		testDump("core-f", 10*time.Minute, withSignature(""), func(cd *coredogv1.CoreDump) { cd.Spec.ELF = nil }),
		testDump("core-g", 20*time.Minute, withSignature(""), func(cd *coredogv1.CoreDump) { cd.Spec.ELF = nil }),
		// A bare pod, crash-looping: five more crashes were counted on its
		// dump once the agent's budget was spent (and three of other
		// signatures, which belong to no group), the last a minute ago.
		testDump("core-h", 4*time.Hour, withPod("team-a", "debug-pod", "", ""), withSignature("fedcba987654"), withSignal(6, "SIGABRT"),
			func(cd *coredogv1.CoreDump) {
				cd.Series = &coredogv1.CoreDumpSeries{Count: 5, OtherCount: 3,
					FirstObserved: metav1.NewTime(now.Add(-3 * time.Hour)), LastObserved: metav1.NewTime(now.Add(-time.Minute))}
			}),
	}
	// Most crashes first (dumps and counted crashes); equal: the most recent first.
	groups := GroupDumps(append(listFixture(), extra...))
	type summary struct {
		sig          string
		count        int
		crashes      int64
		first, last  time.Duration
		workloads    string
		unattributed int
		dumps        string
	}
	want := []summary{
		{"fedcba987654", 2, 7, 4 * time.Hour, time.Minute, "team-a/Pod/debug-pod,team-b/Deployment/api", 0, "core-h,core-a"},
		{"0123456789ab", 4, 4, 5 * time.Hour, 2 * time.Minute, "team-a/StatefulSet/web,team-c/Deployment/web", 1, "core-e,core-b,core-c,core-d"},
		{"", 2, 2, 20 * time.Minute, 10 * time.Minute, "team-a/StatefulSet/web", 0, "core-g,core-f"},
	}
	if len(groups) != len(want) {
		t.Fatalf("got %d groups, want %d: %+v", len(groups), len(want), groups)
	}
	for i, w := range want {
		g := groups[i]
		got := summary{g.Signature, g.Count, g.Crashes, now.Sub(g.FirstSeen), now.Sub(g.LastSeen), strings.Join(g.Workloads, ","), g.Unattributed, strings.Join(g.Dumps, ",")}
		if got != w {
			t.Errorf("group %d = %+v, want %+v", i, got, w)
		}
	}
	if g := groups[2]; g.CrashModule != "" || g.Executable != "server" || g.Signal != "SIGSEGV" {
		t.Errorf("group without signature = %+v", g)
	}
}

func TestRenderGroups(t *testing.T) {
	many := listFixture()
	for i, ns := range []string{"t1", "t2", "t3", "t4"} {
		many = append(many, testDump("core-m"+ns, time.Duration(i+1)*time.Second, withPod(ns, "p", "Deployment", "d")))
	}
	for _, tc := range []struct {
		name  string
		dumps []coredogv1.CoreDump
		wide  bool
		want  string
	}{
		{"plain", listFixture(), false, lines(
			"SIGNATURE      CRASHES   DUMPS   EXECUTABLE   SIGNAL    FIRST SEEN   LAST SEEN   WORKLOADS",
			"0123456789ab   3         3       server       SIGSEGV   60m          2m          team-a/StatefulSet/web (1 without pod)",
			"fedcba987654   1         1       server       SIGABRT   3h           3h          team-b/Deployment/api",
		)},
		{"wide", listFixture(), true, lines(
			"SIGNATURE      CRASHES   DUMPS   EXECUTABLE   SIGNAL    FIRST SEEN   LAST SEEN   WORKLOADS                                CRASH SITE               LATEST DUMP",
			"0123456789ab   3         3       server       SIGSEGV   60m          2m          team-a/StatefulSet/web (1 without pod)   /usr/bin/server+0x1a2b   core-d (+2)",
			"fedcba987654   1         1       server       SIGABRT   3h           3h          team-b/Deployment/api                    /usr/bin/server+0x1a2b   core-a",
		)},
		{"many workloads", many, false, lines(
			"SIGNATURE      CRASHES   DUMPS   EXECUTABLE   SIGNAL    FIRST SEEN   LAST SEEN   WORKLOADS",
			"0123456789ab   7         7       server       SIGSEGV   60m          1s          t1/Deployment/d,t2/Deployment/d,t3/Deployment/d +2 more (1 without pod)",
			"fedcba987654   1         1       server       SIGABRT   3h           3h          team-b/Deployment/api",
		)},
	} {
		var b bytes.Buffer
		RenderGroups(&b, GroupDumps(tc.dumps), tc.wide, false, now)
		if b.String() != tc.want {
			t.Errorf("%s:\ngot:\n%s\nwant:\n%s", tc.name, b.String(), tc.want)
		}
	}
}
