package app

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/coredog/coredog/agent/detect"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func dumpIn(name string, phase coredogv1.Phase) *coredogv1.CoreDump {
	return &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns", ResourceVersion: "1", Labels: map[string]string{"a": "b"}},
		Spec:       coredogv1.CoreDumpSpec{NodeName: "n", PolicyName: "p", FileName: "core.1"},
		Status:     coredogv1.CoreDumpStatus{Phase: phase},
	}
}

func TestDumpStoreReportsDumpsDoneWith(t *testing.T) {
	type call struct{ name, why string }
	var calls []call
	s := &dumpStore{synced: make(chan struct{}),
		onDone: func(name, why string) { calls = append(calls, call{name, why}) }}
	expect := func(step string, want ...call) {
		t.Helper()
		if !slices.Equal(calls, want) {
			t.Errorf("%s: released %v, want %v", step, calls, want)
		}
		calls = nil
	}
	deleting := dumpIn("d", coredogv1.PhasePending)
	deleting.DeletionTimestamp = new(metav1.Now())

	// The first snapshot comes through the transform, as a watch-list's does.
	var first []any
	for _, cd := range []*coredogv1.CoreDump{dumpIn("a", coredogv1.PhasePending), dumpIn("b", coredogv1.PhaseUploaded), deleting} {
		obj, err := trimCoreDump(cd)
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, obj)
	}
	select {
	case <-s.synced:
		t.Fatal("synced before the first list")
	default:
	}
	if err := s.Replace(first, "1"); err != nil {
		t.Fatal(err)
	}
	expect("first list", call{"b", "its CoreDump is Uploaded"}, call{"d", "its CoreDump was deleted"})
	select {
	case <-s.synced:
	default:
		t.Fatal("not synced after the first list")
	}

	mustOK(t, s.Add(dumpIn("c", coredogv1.PhasePending)))
	mustOK(t, s.Update(dumpIn("a", coredogv1.PhaseUploading)))
	expect("pending and uploading")
	mustOK(t, s.Update(dumpIn("a", coredogv1.PhaseSkipped)))
	expect("skipped", call{"a", "its CoreDump is Skipped"})
	mustOK(t, s.Delete(dumpIn("c", coredogv1.PhasePending)))
	expect("deleted", call{"c", "its CoreDump was deleted"})

	// A relist after a broken watch: e was created and b deleted meanwhile.
	mustOK(t, s.Add(dumpIn("b", coredogv1.PhaseUploaded)))
	calls = nil
	mustOK(t, s.Replace([]any{dumpIn("a", coredogv1.PhaseSkipped), dumpIn("e", coredogv1.PhasePending)}, "2"))
	slices.SortFunc(calls, func(x, y call) int { return cmp.Compare(x.name, y.name) })
	expect("relist", call{"a", "its CoreDump is Skipped"}, call{"b", "its CoreDump was deleted"}, call{"d", "its CoreDump was deleted"})
	if s.names.len() != 2 || !s.names.has("a") || !s.names.has("e") {
		t.Errorf("the store knows %v, want a and e", s.names)
	}
}

func TestTrimCoreDumpKeepsWhatTheAgentActsOn(t *testing.T) {
	cd := dumpIn("a", coredogv1.PhaseUploaded)
	obj, err := trimCoreDump(cd)
	if err != nil {
		t.Fatal(err)
	}
	small, ok := obj.(*cachedDump)
	if !ok {
		t.Fatalf("trimCoreDump returned %T", obj)
	}
	if small.Name != "a" || small.Namespace != "ns" || small.ResourceVersion != "1" || small.phase != coredogv1.PhaseUploaded || small.Labels != nil {
		t.Errorf("trimmed to %+v", small)
	}
	// The reflector may hand a trimmed object back.
	again, err := trimCoreDump(small)
	if err != nil || again != any(small) {
		t.Errorf("trimCoreDump of its own result = %v, %v", again, err)
	}
}

func mustOK(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestDumpWatchKickListsAgain: while the reflector's watch is open (or it is
// backing off after an outage), a dump Uploaded meanwhile reaches the agent
// only with a new list; kick starts one at once.
func TestDumpWatchKickListsAgain(t *testing.T) {
	var mu sync.Mutex
	phase := coredogv1.PhasePending
	lists := 0
	released := make(chan string, 4)
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (runtime.Object, error) {
			mu.Lock()
			defer mu.Unlock()
			lists++
			return &coredogv1.CoreDumpList{ListMeta: metav1.ListMeta{ResourceVersion: "1"},
				Items: []coredogv1.CoreDump{*dumpIn("a", phase)}}, nil
		},
		// A watch that stays open and says nothing: the Uploaded phase
		// below is only ever seen by listing. (A streaming list is refused,
		// so that the reflector lists.)
		WatchFuncWithContext: func(_ context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			if opts.SendInitialEvents != nil {
				return nil, errors.New("no streaming lists here")
			}
			return watch.NewFake(), nil
		},
	}
	w := &dumpWatch{lw: lw, restart: make(chan struct{}, 1),
		store: &dumpStore{synced: make(chan struct{}),
			onDone: func(name, why string) { released <- name + ": " + why }}}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.run(ctx) }()
	select {
	case <-w.synced():
	case <-time.After(10 * time.Second):
		t.Fatal("the first list never came")
	}
	mu.Lock()
	phase = coredogv1.PhaseUploaded
	mu.Unlock()
	select {
	case got := <-released:
		t.Fatalf("released %q before any new list", got)
	case <-time.After(200 * time.Millisecond):
	}
	w.kick()
	select {
	case got := <-released:
		if got != "a: its CoreDump is Uploaded" {
			t.Errorf("released %q", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("kick did not list again")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("run: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if lists != 2 {
		t.Errorf("listed %d times, want 2", lists)
	}
}

func TestNameSetKeepsEveryName(t *testing.T) {
	own := DumpName("node-a", detect.Identity{Device: 1, Inode: 2, CtimeNanos: 3, Size: 4})
	if id, ok := parseDumpID(own); !ok || id.name() != own {
		t.Fatalf("parseDumpID(%q) = %x, %v", own, id, ok)
	}
	names := []string{
		own,
		DumpName("node-b", detect.Identity{Inode: 9}),
		"core-0123456789abcdef0123",
		// Not DumpName's form: kept as they are.
		"core-0123456789ABCDEF0123", "core-0123456789abcdef012", "core-0123456789abcdef01234",
		"core-0123456789abcdef012g", "dump-0123456789abcdef0123", "a",
	}
	var s nameSet
	for _, n := range names {
		if s.has(n) {
			t.Errorf("empty set has %q", n)
		}
		s.add(n)
		s.add(n)
	}
	if s.len() != len(names) || len(s.own) != 3 {
		t.Errorf("%d names, %d as hashes; want %d and 3", s.len(), len(s.own), len(names))
	}
	var listed []string
	s.each(func(n string) { listed = append(listed, n) })
	slices.Sort(listed)
	want := slices.Sorted(slices.Values(names))
	if !slices.Equal(listed, want) {
		t.Errorf("each: %q, want %q", listed, want)
	}
	for _, n := range names {
		if !s.has(n) {
			t.Errorf("set lacks %q", n)
		}
		s.remove(n)
		if s.has(n) {
			t.Errorf("set still has %q after remove", n)
		}
	}
	if s.len() != 0 {
		t.Errorf("%d names left", s.len())
	}
}
