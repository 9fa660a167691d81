package detect

import (
	"path/filepath"
	"strings"
	"time"
)

// pidConfirm is how long the size of a file must stay the same, across two
// observations, once the dumping process is gone. The kernel has finished
// writing by the time the process disappears, so this only guards against a
// stat that raced with the last write; it does not need to be long.
const pidConfirm = 100 * time.Millisecond

// observation is what one Lstat of a path told us. Times are kept as
// nanoseconds so that observations compare with ==.
type observation struct {
	size       int64
	mtimeNanos int64
	ctimeNanos int64
	dev        uint64
	ino        uint64
}

func (o observation) identity() Identity {
	return Identity{Device: o.dev, Inode: o.ino, CtimeNanos: o.ctimeNanos, Size: o.size}
}

func (o observation) sameFile(p observation) bool {
	return o.dev == p.dev && o.ino == p.ino
}

// pidState is what the detector knows about the process that dumped a file.
type pidState int

const (
	// pidUnknown: no PID for this file, or no way to check it; completeness
	// then rests on the settle time alone.
	pidUnknown pidState = iota
	// pidAlive: <ProcRoot>/<pid> exists, so the kernel may still be writing.
	pidAlive
	// pidGone: <ProcRoot>/<pid> does not exist, so the kernel is done.
	pidGone
)

func (p pidState) String() string {
	switch p {
	case pidAlive:
		return "alive"
	case pidGone:
		return "gone"
	default:
		return "unknown"
	}
}

// fileState is the history of one path, reduced to what the decision needs.
type fileState struct {
	last observation
	// stableSince is when last was first observed; every change of any stat
	// field moves it, so "stable" means the whole tuple held still.
	stableSince time.Time
	// lastSeen is when last was most recently observed.
	lastSeen time.Time

	firstSeen time.Time
	source    Source
	// pending is true until the current identity has been emitted.
	pending bool
	// emitted is the identity last emitted for this path, if any; a later
	// change of the same inode is then a re-emission worth logging.
	emitted    Identity
	hasEmitted bool
}

// observe records an observation made at the given time.
func (s *fileState) observe(o observation, at time.Time) {
	if o != s.last {
		s.last = o
		s.stableSince = at
	}
	s.lastSeen = at
}

// complete is the whole completeness rule. It looks only at recorded
// observations, never at the clock, so that "stable" always means "seen
// unchanged", not "not looked at for a while".
//
// pid must have been determined before the latest observation was made: a
// process that is gone when we look has finished writing, so a stat taken
// afterwards shows the final size. The other order could pair a stale size
// with a PID that vanished in between.
func complete(s *fileState, pid pidState, settle time.Duration) bool {
	stable := s.lastSeen.Sub(s.stableSince)
	switch pid {
	case pidAlive:
		// The dying process is still in the kernel's hands; however long
		// the file has looked still, more may come.
		return false
	case pidGone:
		// stable > 0 also means at least two observations. A file whose
		// modification time is already pidConfirm old when first seen
		// needs no second look: its writer is gone and it has not
		// changed since (what a poll finds, long after the crash).
		quiet := s.lastSeen.Sub(time.Unix(0, s.last.mtimeNanos))
		return stable >= pidConfirm || quiet >= pidConfirm
	default:
		return stable >= settle
	}
}

// ready is a file judged complete, with what the caller needs to log.
type ready struct {
	File
	// changed is true when the same inode was emitted before with another
	// identity: it grew or was touched after we judged it complete.
	changed  bool
	previous Identity
}

// tracker holds the state of every path in the tree and decides when each is
// emitted. It does no I/O: callers bring observations, PID states and times,
// which keeps it testable with a fake clock.
type tracker struct {
	dir     string
	settle  time.Duration
	files   map[string]*fileState
	pending map[string]*fileState
	// emitted is every identity ever emitted, so that no identity is
	// emitted twice in the life of the Detector, even through another path
	// (a hard link) or after Forget.
	emitted map[Identity]struct{}
}

func newTracker(dir string, settle time.Duration) *tracker {
	return &tracker{
		dir:     dir,
		settle:  settle,
		files:   map[string]*fileState{},
		pending: map[string]*fileState{},
		emitted: map[Identity]struct{}{},
	}
}

// observe records an observation of path, noticed through src, at now. It
// reports whether this is the first sight of this file at this path.
func (t *tracker) observe(path string, o observation, src Source, now time.Time) (first bool) {
	s, ok := t.files[path]
	if !ok || !s.last.sameFile(o) {
		// A new path, or a different file now sits at a known path: start
		// over rather than let the old file's history vouch for the new one.
		s = &fileState{last: o, stableSince: now, lastSeen: now, firstSeen: now, source: src, pending: true}
		t.files[path] = s
		t.pending[path] = s
		return true
	}
	s.observe(o, now)
	if !s.pending && o.identity() != s.emitted {
		s.pending = true
		s.firstSeen = now
		s.source = src
		t.pending[path] = s
	}
	return false
}

// judge decides whether the pending file at path is complete, given the
// process state found before its latest observation. It returns the file to
// emit, at most once per identity.
func (t *tracker) judge(path string, pid pidState, now time.Time) (ready, bool) {
	s, ok := t.pending[path]
	if !ok || !complete(s, pid, t.settle) {
		return ready{}, false
	}
	delete(t.pending, path)
	s.pending = false
	id := s.last.identity()
	r := ready{changed: s.hasEmitted, previous: s.emitted}
	s.emitted, s.hasEmitted = id, true
	if _, dup := t.emitted[id]; dup {
		return ready{}, false
	}
	t.emitted[id] = struct{}{}
	r.File = File{
		Path:       path,
		RelPath:    relPath(t.dir, path),
		Identity:   id,
		ModTime:    time.Unix(0, s.last.mtimeNanos),
		Source:     s.source,
		SeenAt:     s.firstSeen,
		CompleteAt: now,
	}
	return r, true
}

// drop forgets path and reports whether it was still pending.
func (t *tracker) drop(path string) (wasPending bool) {
	_, wasPending = t.pending[path]
	delete(t.pending, path)
	delete(t.files, path)
	return wasPending
}

// dropTree forgets every path under dir (a directory that went away) and
// returns the pending ones.
func (t *tracker) dropTree(dir string) (pending []string) {
	prefix := dir + string(filepath.Separator)
	for p := range t.files {
		if strings.HasPrefix(p, prefix) && t.drop(p) {
			pending = append(pending, p)
		}
	}
	return pending
}

// sweep forgets every path not in seen (a full rescan did not find it) and
// returns the pending ones.
func (t *tracker) sweep(seen map[string]struct{}) (pending []string) {
	for p := range t.files {
		if _, ok := seen[p]; !ok && t.drop(p) {
			pending = append(pending, p)
		}
	}
	return pending
}

func (t *tracker) pendingPaths() []string {
	out := make([]string, 0, len(t.pending))
	for p := range t.pending {
		out = append(out, p)
	}
	return out
}

// relPath is path relative to dir with '/' separators.
func relPath(dir, path string) string {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		// Paths come from walking dir, so this does not happen; the
		// absolute path is still a usable name.
		return filepath.ToSlash(path)
	}
	return filepath.ToSlash(rel)
}
