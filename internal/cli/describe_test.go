package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestRenderDescriptionFull(t *testing.T) {
	cd := testDump("core-b", time.Hour, func(cd *coredogv1.CoreDump) {
		cd.Labels = map[string]string{coredogv1.LabelPod: "web-0", coredogv1.LabelSignal: "SIGSEGV"}
		cd.Spec.ContainerID = "containerd://abc"
		cd.Status.Conditions = []metav1.Condition{
			{Type: coredogv1.ConditionUploaded, Status: metav1.ConditionTrue, Reason: "Stored", Message: "in s3", LastTransitionTime: metav1.NewTime(now.Add(-50 * time.Minute))},
			{Type: coredogv1.ConditionPodResolved, Status: metav1.ConditionTrue, Reason: "ContainerID", LastTransitionTime: metav1.NewTime(now.Add(-59 * time.Minute))},
		}
	})
	events := []eventsv1.Event{{
		Regarding: corev1.ObjectReference{Kind: "Pod", Namespace: "team-a", Name: "web-0"},
		Reason:    coredogv1.EventCoreDumped, Type: "Normal", Note: "Container app: server killed by SIGSEGV",
		EventTime: metav1.NewMicroTime(now.Add(-55 * time.Minute)), ReportingController: "coredog-controller",
		Series: &eventsv1.EventSeries{Count: 3, LastObservedTime: metav1.NewMicroTime(now.Add(-55 * time.Minute))},
	}}
	var b bytes.Buffer
	RenderDescription(&b, Description{Dump: &cd, SameSignature: 1, Events: events, CommandLine: "/usr/bin/server --port 8080"}, now)
	want := lines(
		"Name:             core-b",
		"Namespace:        coredog-system",
		"Phase:            Uploaded",
		"Crashed:          2026-03-01T11:00:00Z (60m ago)",
		"Node:             node-1",
		"Policy:           default",
		"Pod:",
		"  Name:           team-a/web-0",
		"  UID:            uid-1",
		"  Container:      app",
		"  Workload:       StatefulSet/web",
		"  Image:          registry.example/web:1.2",
		"  Image ID:       registry.example/web@sha256:"+sha64,
		"  Resolved by:    ContainerID",
		"  Container ID:   containerd://abc",
		"Process:",
		"  Executable:     server",
		"  Arguments:      /usr/bin/server --port 8080",
		"  PID:            1 (host 4242)",
		"  Signal:         SIGSEGV (11)",
		"Crash:",
		"  Fault address:  0x0",
		"  Module:         /usr/bin/server",
		"  Offset:         0x1a2b",
		"  Build ID:       deadbeef",
		"  Machine:        x86_64",
		"  Threads:        4",
		"Signature:        0123456789ab (1 other dump has it: kubectl coredog list -l coredog.io/signature=0123456789ab)",
		"Backtrace:        <none>",
		"File:",
		"  Name:           core.web-0.server.1.11.0",
		"  Size:           43Mi (45088768 bytes)",
		"  Detected:       2026-03-01T11:00:00Z (60m ago) by Watch",
		"Storage:",
		"  URL:            s3://cores/prod/team-a/web-0/core-b.zst",
		"  Key:            prod/team-a/web-0/core-b.zst",
		"  Compression:    Zstd",
		"  Stored size:    5Mi (5242880 bytes)",
		"  SHA-256:        aa",
		"  Uploaded:       2026-03-01T11:00:00Z (60m ago)",
		"Attempts:         1",
		"Labels:           coredog.io/pod=web-0,coredog.io/signal=SIGSEGV",
		"Conditions:",
		"  TYPE          STATUS   REASON        SINCE   MESSAGE",
		"  PodResolved   True     ContainerID   59m     <none>",
		"  Uploaded      True     Stored        50m     in s3",
		"Events:",
		"  TYPE     REASON       AGE        FROM                 ON                 MESSAGE",
		"  Normal   CoreDumped   55m (x3)   coredog-controller   Pod/team-a/web-0   Container app: server killed by SIGSEGV",
	)
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestRenderDescriptionCases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       Description
		want    []string
		notWant []string
	}{
		{
			name: "unresolved, not stored, not ELF",
			d: Description{Dump: new(testDump("core-u", time.Minute, withPod("", "", "", ""), withPhase(coredogv1.PhaseFailed, "", "upload failed: 403"),
				func(cd *coredogv1.CoreDump) {
					cd.Status.Pod = &coredogv1.PodReference{ResolvedBy: coredogv1.ResolvedByUnresolved}
					cd.Spec.ELF, cd.Spec.ParseError = nil, "not an ELF file"
				})), SameSignature: 0},
			want: []string{"Phase:            Failed", "Message:          upload failed: 403", "  unresolved (see Message", "  no ELF notes",
				"  Parse error:    not an ELF file", "(no other dump has it)", "Storage:\n  not stored", "Events:           <none>"},
		},
		{
			name: "pending, events unreadable, signature count unknown",
			d: Description{Dump: new(testDump("core-p", time.Minute, withPhase(coredogv1.PhasePending, "", ""), withPod("", "", "", ""))),
				SameSignature: -1, EventsError: "listing events: forbidden"},
			want: []string{"Phase:            Pending", "  not resolved yet", "(other dumps with it could not be listed)", "Events:           <listing events: forbidden>"},
		},
		{
			name: "arguments not readable from storage",
			d: Description{Dump: new(testDump("core-s", time.Minute)), SameSignature: 0,
				CommandLineError: "cannot read the stored metadata: no usable storage credentials"},
			want: []string{"  Arguments:      <cannot read the stored metadata: no usable storage credentials>"},
		},
		{
			name: "privileged dump",
			d: Description{Dump: new(testDump("core-s", time.Minute, func(cd *coredogv1.CoreDump) {
				cd.Spec.Process.DumpMode = coredogv1.DumpModePrivileged
			})), SameSignature: 0},
			want: []string{"  Dump mode:      Privileged (dumped as root under fs.suid_dumpable=2"},
		},
		{
			name: "backtrace of the crashing thread",
			d: Description{Dump: new(testDump("core-bt", time.Minute, func(cd *coredogv1.CoreDump) {
				cd.Status.Analysis = &coredogv1.CrashAnalysis{Outcome: coredogv1.AnalysisPartial, Reason: "libc.so.6: cannot open it", Threads: 3, CrashingThread: 42,
					Frames: []coredogv1.StackFrame{
						{Module: "libc.so.6", PC: "0x7f0000001000", Offset: "0x1000"},
						{Module: "server", PC: "0x401234", Offset: "0x1234", Function: "shop::Cart<int>::checkout", File: "/src/cart.cc", Line: 17},
						{Module: "server", PC: "0x401300", Offset: "0x1300", Function: "main\x1b[2J"},
					}}
			})), SameSignature: 0},
			want: []string{
				"Backtrace:        Partial, thread 42 of 3: libc.so.6: cannot open it",
				"  #0  0x7f0000001000 in ?? (libc.so.6+0x1000)",
				"  #1  0x401234 in shop::Cart<int>::checkout (server+0x1234) at /src/cart.cc:17",
				`  #2  0x401300 in main\x1b[2J (server+0x1300)`,
			},
			notWant: []string{"\x1b"},
		},
		{
			name: "hostile values are escaped",
			d: Description{Dump: new(testDump("core-h", time.Minute, func(cd *coredogv1.CoreDump) {
				cd.Spec.FileName = "core.\nfake: line"
			})), SameSignature: 3, CommandLine: "x\x1b[2Jy"},
			want:    []string{`Arguments:      x\x1b[2Jy`, `core.\nfake: line`, "(3 other dumps have it"},
			notWant: []string{"\x1b"},
		},
		{
			name: "the log's tail is escaped line by line",
			d: Description{Dump: new(testDump("core-l", time.Minute)), SameSignature: 0, LastWordsFrom: "the previous run of container app",
				LastWords: tailLines([]byte("old\npanic: boom\x1b]0;owned\x07\r\ngoroutine 1 [running]:\nfake: line\x1b[2J\n"), 3)},
			want:    []string{"Last words:\n  (the previous run of container app)\n  panic: boom\\x1b]0;owned\\a\n  goroutine 1 [running]:\n  fake: line\\x1b[2J\n"},
			notWant: []string{"\x1b", "\x07", "\r", "  old"},
		},
		{
			name:    "no log kept",
			d:       Description{Dump: new(testDump("core-n", time.Minute)), SameSignature: 0, LastWordsError: "no log was kept: the dump's pod is unknown"},
			want:    []string{"Last words:       <no log was kept: the dump's pod is unknown>"},
			notWant: []string{"Last words:\n"},
		},
	} {
		var b bytes.Buffer
		RenderDescription(&b, tc.d, now)
		for _, w := range tc.want {
			if !strings.Contains(b.String(), w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.name, w, b.String())
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(b.String(), w) {
				t.Errorf("%s: output has %q:\n%s", tc.name, w, b.String())
			}
		}
	}
}

func TestTailLines(t *testing.T) {
	long := strings.Repeat("é", maxLogLineRunes+5)
	for _, tc := range []struct {
		log  string
		n    int
		want []string
	}{
		{"", 5, nil},
		{"\n\n", 5, nil},
		{"a\nb\nc\n", 2, []string{"b", "c"}},
		{"a\r\nb", 5, []string{"a", "b"}},
		{long, 1, []string{strings.Repeat("é", maxLogLineRunes) + "…"}},
	} {
		got := tailLines([]byte(tc.log), tc.n)
		if strings.Join(got, "|") != strings.Join(tc.want, "|") || len(got) != len(tc.want) {
			t.Errorf("tailLines(%q, %d) = %q, want %q", tc.log, tc.n, got, tc.want)
		}
	}
	if n := countLines([]byte("a\nb\n")); n != 2 {
		t.Errorf("countLines = %d", n)
	}
}
