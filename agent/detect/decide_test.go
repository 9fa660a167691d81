package detect

import (
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

var epoch = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// look is one observation in a decision scenario: the clock moves on by
// after, the file is seen with size (mtime moves whenever size does, or when
// touch is set), the process is in state pid, and the file should then be
// judged complete or not.
type look struct {
	after time.Duration
	size  int64
	touch bool
	pid   pidState
	// mtimeAgo dates a change's modification time back from the look.
	mtimeAgo time.Duration
	// declared is the size the file says it will have at this look; 0
	// means it says nothing.
	declared int64
	want     bool
}

func TestComplete(t *testing.T) {
	const settle = 2 * time.Second
	ms := time.Millisecond
	tests := []struct {
		name  string
		looks []look
	}{
		{
			name: "growing file is never complete",
			looks: []look{
				{size: 4096},
				{after: 500 * ms, size: 8192},
				{after: 500 * ms, size: 12288},
				{after: 1500 * ms, size: 16384},
				{after: 1999 * ms, size: 20480},
			},
		},
		{
			name: "paused writer is not complete during a pause shorter than the settle time",
			looks: []look{
				{size: 4096},
				{after: 250 * ms, size: 8192},
				{after: 400 * ms, size: 8192},
				{after: 400 * ms, size: 8192},
				{after: 400 * ms, size: 8192},  // 1.2s paused
				{after: 250 * ms, size: 12288}, // resumes
				{after: 1000 * ms, size: 12288},
				{after: 999 * ms, size: 12288},
				{after: 1 * ms, size: 12288, want: true}, // 2s after the last change
			},
		},
		{
			name: "stable file is complete once past the settle time",
			looks: []look{
				{size: 1 << 20},
				{after: time.Second, size: 1 << 20},
				{after: 999 * ms, size: 1 << 20},
				{after: 1 * ms, size: 1 << 20, want: true},
				{after: time.Minute, size: 1 << 20, want: true},
			},
		},
		{
			name: "one observation is never enough, however long ago",
			looks: []look{
				{after: time.Hour, size: 1 << 20},
			},
		},
		{
			name: "mtime change without growth restarts the settle time",
			looks: []look{
				{size: 4096},
				{after: 1500 * ms, size: 4096, touch: true},
				{after: 1500 * ms, size: 4096},
				{after: 500 * ms, size: 4096, want: true},
			},
		},
		{
			name: "empty file that stays empty is complete",
			looks: []look{
				{size: 0},
				{after: settle, size: 0, want: true},
			},
		},
		{
			name: "process alive is never complete",
			looks: []look{
				{size: 4096, pid: pidAlive},
				{after: settle, size: 4096, pid: pidAlive},
				{after: time.Hour, size: 4096, pid: pidAlive},
			},
		},
		{
			name: "process gone and size stable is complete quickly",
			looks: []look{
				{size: 4096, pid: pidGone},
				{after: 50 * ms, size: 4096, pid: pidGone},
				{after: 50 * ms, size: 4096, pid: pidGone, want: true},
			},
		},
		{
			name: "process gone after a long still spell is complete at the next look",
			looks: []look{
				{size: 4096, pid: pidAlive},
				{after: 5 * time.Second, size: 4096, pid: pidAlive},
				{after: 100 * ms, size: 4096, pid: pidGone, want: true},
			},
		},
		{
			name: "process gone but still growing is not complete yet",
			looks: []look{
				{size: 4096, pid: pidAlive},
				{after: 100 * ms, size: 8192, pid: pidGone},
				{after: 100 * ms, size: 12288, pid: pidGone},
				{after: 99 * ms, size: 12288, pid: pidGone},
				{after: 1 * ms, size: 12288, pid: pidGone, want: true},
			},
		},
		{
			name: "process gone and not modified for a while is complete at the first look",
			looks: []look{
				{size: 4096, pid: pidGone, mtimeAgo: time.Second, want: true},
			},
		},
		{
			name: "process gone but modified just now needs a confirming look",
			looks: []look{
				{size: 4096, pid: pidGone, mtimeAgo: 99 * ms},
				{after: 1 * ms, size: 4096, pid: pidGone, want: true},
			},
		},
		{
			name: "an old modification time does not shorten the settle time",
			looks: []look{
				{size: 4096, mtimeAgo: time.Hour},
				{after: settle - ms, size: 4096},
			},
		},
		{
			name: "shorter than declared: a writer's pause of twice the settle time is waited out",
			looks: []look{
				{size: 4096, declared: 8192},
				{after: settle, size: 4096, declared: 8192},
				{after: settle, size: 4096, declared: 8192}, // old rule: taken here, half a core
				{after: 250 * ms, size: 8192, declared: 8192},
				{after: settle - ms, size: 8192, declared: 8192},
				{after: ms, size: 8192, declared: 8192, want: true},
			},
		},
		{
			name: "shorter than declared and still for the cut quiet time: taken as cut",
			looks: []look{
				{size: 4096, declared: 8192},
				{after: 5 * settle, size: 4096, declared: 8192},
				{after: 5*settle - ms, size: 4096, declared: 8192},
				{after: ms, size: 4096, declared: 8192, want: true},
			},
		},
		{
			name: "a change while short starts the cut quiet time again",
			looks: []look{
				{size: 4096, declared: 1 << 20},
				{after: 9 * settle, size: 8192, declared: 1 << 20},
				{after: 9 * settle, size: 8192, declared: 1 << 20},
				{after: settle, size: 8192, declared: 1 << 20, want: true},
			},
		},
		{
			name: "as long as declared, or longer: the settle time alone",
			looks: []look{
				{size: 8192, declared: 8192},
				{after: settle, size: 8192, declared: 8192, want: true},
				{after: settle, size: 9000, declared: 8192},
				{after: settle, size: 9000, declared: 8192, want: true},
			},
		},
		{
			name: "process gone: a short file is cut, no need to wait",
			looks: []look{
				{size: 4096, pid: pidAlive, declared: 8192},
				{after: 100 * ms, size: 4096, pid: pidGone, declared: 8192, want: true},
			},
		},
		{
			name: "process alive: the declared size changes nothing",
			looks: []look{
				{size: 8192, pid: pidAlive, declared: 8192},
				{after: time.Hour, size: 8192, pid: pidAlive, declared: 8192},
			},
		},
		{
			name: "process gone ignores the settle time but still needs a confirming look",
			looks: []look{
				{size: 4096, pid: pidGone},
				{after: time.Second, size: 8192, pid: pidGone},
				{after: 100 * ms, size: 8192, pid: pidGone, want: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(epoch)
			var s fileState
			o := observation{dev: 1, ino: 2, ctimeNanos: epoch.UnixNano(), size: -1}
			for i, l := range tt.looks {
				clk.Step(l.after)
				if l.size != o.size || l.touch {
					o.size = l.size
					o.mtimeNanos = clk.Now().Add(-l.mtimeAgo).UnixNano()
					o.ctimeNanos = o.mtimeNanos
				}
				if i == 0 {
					s = fileState{last: o, stableSince: clk.Now(), lastSeen: clk.Now()}
				} else {
					s.observe(o, clk.Now())
				}
				if l.declared > 0 {
					s.setDeclared(l.declared, true)
				} else {
					s.setDeclared(0, false)
				}
				if got := complete(&s, l.pid, settle, 10*settle); got != l.want {
					t.Errorf("look %d (t=%s, size %d, process %s): complete = %v, want %v",
						i, clk.Since(epoch), l.size, l.pid, got, l.want)
				}
			}
		})
	}
}

// op is one step against a tracker: observe path with obs through src, or
// judge it, or forget it; judge steps say what should be emitted.
type op struct {
	after  time.Duration
	do     string // "observe", "judge", "forget"
	path   string
	obs    observation
	src    Source
	pid    pidState
	emit   bool
	change bool // emission is a re-emission of a changed file
}

func TestTracker(t *testing.T) {
	const (
		dir    = "/cores"
		settle = time.Second
	)
	a := observation{dev: 8, ino: 100, ctimeNanos: 1, mtimeNanos: 1, size: 4096}
	aGrown := observation{dev: 8, ino: 100, ctimeNanos: 2, mtimeNanos: 2, size: 8192}
	b := observation{dev: 8, ino: 200, ctimeNanos: 3, mtimeNanos: 3, size: 4096}
	tests := []struct {
		name string
		ops  []op
	}{
		{
			name: "complete file is emitted once",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceWatch},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourcePoll},
				{do: "judge", path: "/cores/core.1", emit: true},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourcePoll},
				{do: "judge", path: "/cores/core.1"},
			},
		},
		{
			name: "file that grows after emission is emitted again",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "judge", path: "/cores/core.1", emit: true},
				{after: time.Second, do: "observe", path: "/cores/core.1", obs: aGrown, src: SourceWatch},
				{do: "judge", path: "/cores/core.1"},
				{after: settle, do: "observe", path: "/cores/core.1", obs: aGrown, src: SourceWatch},
				{do: "judge", path: "/cores/core.1", emit: true, change: true},
			},
		},
		{
			name: "new inode at a known path starts over and is not a change",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "judge", path: "/cores/core.1", emit: true},
				{do: "observe", path: "/cores/core.1", obs: b, src: SourceWatch},
				{do: "judge", path: "/cores/core.1"},
				{after: settle, do: "observe", path: "/cores/core.1", obs: b, src: SourceWatch},
				{do: "judge", path: "/cores/core.1", emit: true},
			},
		},
		{
			name: "forgotten path with the same identity is not emitted again",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "judge", path: "/cores/core.1", emit: true},
				{do: "forget", path: "/cores/core.1"},
				{do: "observe", path: "/cores/core.1", obs: a, src: SourcePoll},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourcePoll},
				{do: "judge", path: "/cores/core.1"},
			},
		},
		{
			name: "forgotten path with a new file is emitted",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "judge", path: "/cores/core.1", emit: true},
				{do: "forget", path: "/cores/core.1"},
				{do: "observe", path: "/cores/core.1", obs: b, src: SourceWatch},
				{after: settle, do: "observe", path: "/cores/core.1", obs: b, src: SourceWatch},
				{do: "judge", path: "/cores/core.1", emit: true},
			},
		},
		{
			name: "hard link to an emitted file is not emitted",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "observe", path: "/cores/link", obs: a, src: SourceRescan},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "observe", path: "/cores/link", obs: a, src: SourceRescan},
				{do: "judge", path: "/cores/core.1", emit: true},
				{do: "judge", path: "/cores/link"},
			},
		},
		{
			name: "forgotten pending file is not judged",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{after: settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceRescan},
				{do: "forget", path: "/cores/core.1"},
				{do: "judge", path: "/cores/core.1"},
			},
		},
		{
			name: "dumping process decides over the settle time",
			ops: []op{
				{do: "observe", path: "/cores/core.1", obs: a, src: SourceWatch},
				{after: 10 * settle, do: "observe", path: "/cores/core.1", obs: a, src: SourceWatch},
				{do: "judge", path: "/cores/core.1", pid: pidAlive},
				{do: "judge", path: "/cores/core.1", pid: pidGone, emit: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(epoch)
			tr := newTracker(dir, settle, 10*settle)
			firstSeen := map[string]time.Time{}
			firstSrc := map[string]Source{}
			for i, o := range tt.ops {
				clk.Step(o.after)
				switch o.do {
				case "observe":
					if s, ok := tr.files[o.path]; !ok || !s.last.sameFile(o.obs) {
						firstSeen[o.path], firstSrc[o.path] = clk.Now(), o.src
					}
					tr.observe(o.path, o.obs, o.src, clk.Now())
				case "forget":
					tr.drop(o.path)
				case "judge":
					r, ok := tr.judge(o.path, o.pid, clk.Now())
					if ok != o.emit {
						t.Fatalf("op %d: judge emitted %v, want %v", i, ok, o.emit)
					}
					if !ok {
						continue
					}
					if r.changed != o.change {
						t.Errorf("op %d: changed = %v, want %v", i, r.changed, o.change)
					}
					if o.change != (r.Previous != nil) || (r.Previous != nil && *r.Previous != r.previous) {
						t.Errorf("op %d: Previous = %v, want the earlier identity only when changed", i, r.Previous)
					}
					want := tr.files[o.path].last
					if r.Identity != want.identity() || r.Path != o.path || r.RelPath != o.path[len(dir)+1:] ||
						!r.ModTime.Equal(time.Unix(0, want.mtimeNanos)) || !r.CompleteAt.Equal(clk.Now()) {
						t.Errorf("op %d: emitted %+v, want identity %s at %s", i, r.File, want.identity(), clk.Now())
					}
					if !o.change && (!r.SeenAt.Equal(firstSeen[o.path]) || r.Source != firstSrc[o.path]) {
						t.Errorf("op %d: seen %s via %s, want %s via %s", i, r.SeenAt, r.Source, firstSeen[o.path], firstSrc[o.path])
					}
				default:
					t.Fatalf("op %d: unknown op %q", i, o.do)
				}
			}
		})
	}
}

func TestRecheckInterval(t *testing.T) {
	tests := []struct {
		settle    time.Duration
		checksPID bool
		want      time.Duration
	}{
		{settle: 2 * time.Second, want: 250 * time.Millisecond},
		{settle: 300 * time.Millisecond, want: 75 * time.Millisecond},
		{settle: time.Millisecond, want: 20 * time.Millisecond},
		{settle: time.Hour, want: 250 * time.Millisecond},
		{settle: 2 * time.Second, checksPID: true, want: 50 * time.Millisecond},
		{settle: time.Millisecond, checksPID: true, want: 20 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := recheckInterval(tt.settle, tt.checksPID); got != tt.want {
			t.Errorf("recheckInterval(%s, %v) = %s, want %s", tt.settle, tt.checksPID, got, tt.want)
		}
	}
}

func TestIdentityString(t *testing.T) {
	tests := []struct {
		id   Identity
		want string
	}{
		{id: Identity{}, want: "0:0:0:0"},
		{id: Identity{Device: 66306, Inode: 1234567, CtimeNanos: 1772366400123456789, Size: 1 << 30}, want: "66306:1234567:1772366400123456789:1073741824"},
		{id: Identity{Device: ^uint64(0), Inode: 1, CtimeNanos: -5, Size: 0}, want: "18446744073709551615:1:-5:0"},
	}
	for _, tt := range tests {
		if got := tt.id.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.id, got, tt.want)
		}
	}
}

func TestRelPath(t *testing.T) {
	tests := []struct{ dir, path, want string }{
		{dir: "/cores", path: "/cores/core.1", want: "core.1"},
		{dir: "/cores", path: "/cores/ns/pod/core.1", want: "ns/pod/core.1"},
		{dir: "/", path: "/core.1", want: "core.1"},
	}
	for _, tt := range tests {
		if got := relPath(tt.dir, tt.path); got != tt.want {
			t.Errorf("relPath(%q, %q) = %q, want %q", tt.dir, tt.path, got, tt.want)
		}
	}
}
