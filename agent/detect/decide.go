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

// fileState is the history of one path while it is pending, reduced to what
// the decision needs.
type fileState struct {
	last observation
	// stableSince is when last was first observed; every change of any stat
	// field moves it, so "stable" means the whole tuple held still.
	stableSince time.Time
	// lastSeen is when last was most recently observed.
	lastSeen time.Time

	firstSeen time.Time
	source    Source
	// emitted is the identity last emitted for this path, if any; a later
	// change of the same inode is then a re-emission worth logging.
	emitted    Identity
	hasEmitted bool

	// declared is the size the file says it will have (Options.DeclaredSize),
	// as read when it looked like declaredOf; hasDeclared is false when it
	// says nothing.
	declared    int64
	hasDeclared bool
	declaredOf  observation
	// declaredRead is set once declared has been read.
	declaredRead bool
}

// short reports whether the file, as last seen, is shorter than it says it
// will be: its writer has more to write, or was cut off.
func (s *fileState) short() bool {
	return s.declaredRead && s.hasDeclared && s.last.size < s.declared
}

// record is what the tracker keeps of every path, pending or not. A file
// that has been emitted and has not changed since (nearly all of them, on a
// node whose dumps wait for upload) costs only its last observation: its
// emitted identity is last's.
type record struct {
	last observation
	// scan is the number of the rescan that last found the path.
	scan uint32
	// state is set while the path is pending.
	state *fileState
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
//
// Without a process to check, a file that is shorter than it declares
// (a core whose program headers say where it ends) is still being written
// however long it has been still, until it has been still for cutQuiet:
// then it is taken as cut (RLIMIT_CORE, a full disk) and emitted as it is.
func complete(s *fileState, pid pidState, settle, cutQuiet time.Duration) bool {
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
		if s.short() {
			return stable >= max(settle, cutQuiet)
		}
		return stable >= settle
	}
}

// needsDeclared reports whether the file's declared size is worth reading
// now: only the settle-time rule uses it, only once the file has been still
// for the settle time (so at most once per version of the file, not on every
// look), and not again for an observation it was read at.
func (s *fileState) needsDeclared(pid pidState, settle time.Duration) bool {
	return pid == pidUnknown && s.lastSeen.Sub(s.stableSince) >= settle && (!s.declaredRead || s.declaredOf != s.last)
}

// setDeclared records what the file said about its final size when it
// looked like s.last.
func (s *fileState) setDeclared(size int64, ok bool) {
	s.declared, s.hasDeclared, s.declaredOf, s.declaredRead = size, ok, s.last, true
}

// ready is a file judged complete, with what the caller needs to log.
type ready struct {
	File
	// changed is true when the same inode was emitted before with another
	// identity: it grew or was touched after we judged it complete.
	changed  bool
	previous Identity
	// declared is the size a short (cut) file said it would have.
	declared int64
}

// tracker holds the state of every path in the tree and decides when each is
// emitted. It does no I/O: callers bring observations, PID states and times,
// which keeps it testable with a fake clock.
type tracker struct {
	dir    string
	settle time.Duration
	// cutQuiet is how long a file shorter than it declares must be still
	// before it is taken as cut.
	cutQuiet time.Duration
	files    map[string]*record
	pending  map[string]*fileState
	// emitted is every identity emitted, so that no identity is emitted
	// twice, even through another path (a hard link) or after Forget. A
	// rescan forgets the identities that no file in the tree has any more
	// once they outnumber the files (see prune).
	emitted map[Identity]struct{}
	// scan numbers the rescans; observations stamp records with it.
	scan uint32
}

func newTracker(dir string, settle, cutQuiet time.Duration) *tracker {
	return &tracker{
		dir:      dir,
		settle:   settle,
		cutQuiet: cutQuiet,
		files:    map[string]*record{},
		pending:  map[string]*fileState{},
		emitted:  map[Identity]struct{}{},
	}
}

// observe records an observation of path, noticed through src, at now. It
// reports whether this is the first sight of this file at this path.
func (t *tracker) observe(path string, o observation, src Source, now time.Time) (first bool) {
	r, ok := t.files[path]
	if !ok {
		r = &record{}
		t.files[path] = r
	}
	first, pending := t.update(r, !ok, o, src, now)
	if pending {
		t.pending[path] = r.state
	}
	return first
}

// observeName is observe for a path held in a buffer, which is copied only
// when the path is new or becomes pending again: a rescan of a tree it knows
// allocates nothing here. A new path is returned as stored.
func (t *tracker) observeName(path []byte, o observation, src Source, now time.Time) (stored string, first bool) {
	// Indexing with string(path) does not copy path.
	r, ok := t.files[string(path)]
	if !ok {
		stored = string(path)
		r = &record{}
		t.files[stored] = r
	}
	first, pending := t.update(r, !ok, o, src, now)
	if pending {
		if stored == "" {
			stored = string(path)
		}
		t.pending[stored] = r.state
	}
	return stored, first
}

// update applies an observation to a record. It reports whether this is the
// first sight of the file, and whether the record has just become pending,
// for the caller to add it to t.pending.
func (t *tracker) update(r *record, isNew bool, o observation, src Source, now time.Time) (first, becamePending bool) {
	r.scan = t.scan
	if isNew || !r.last.sameFile(o) {
		// A new path, or a different file now sits at a known path: start
		// over rather than let the old file's history vouch for the new one.
		r.last = o
		r.state = &fileState{last: o, stableSince: now, lastSeen: now, firstSeen: now, source: src}
		return true, true
	}
	if r.state != nil {
		r.last = o
		r.state.observe(o, now)
		return false, false
	}
	emitted := r.last.identity()
	r.last = o
	if o.identity() == emitted {
		return false, false
	}
	r.state = &fileState{last: o, stableSince: now, lastSeen: now, firstSeen: now, source: src, emitted: emitted, hasEmitted: true}
	return false, true
}

// judge decides whether the pending file at path is complete, given the
// process state found before its latest observation. It returns the file to
// emit, at most once per identity.
func (t *tracker) judge(path string, pid pidState, now time.Time) (ready, bool) {
	s, ok := t.pending[path]
	if !ok || !complete(s, pid, t.settle, t.cutQuiet) {
		return ready{}, false
	}
	t.settled(path)
	id := s.last.identity()
	r := ready{changed: s.hasEmitted, previous: s.emitted}
	if s.short() && pid == pidUnknown {
		r.declared = s.declared
	}
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
		Cut:        r.declared > 0,
	}
	if s.hasEmitted {
		prev := s.emitted
		r.Previous = &prev
	}
	return r, true
}

// settled ends path's pending state: its current identity counts as emitted.
func (t *tracker) settled(path string) {
	delete(t.pending, path)
	if len(t.pending) == 0 {
		// A map keeps the room it once needed; a burst of thousands of
		// files should not cost that room for the life of the agent.
		t.pending = map[string]*fileState{}
	}
	if r, ok := t.files[path]; ok {
		r.state = nil
	}
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

// beginScan starts a rescan: every path it finds is stamped with its number.
func (t *tracker) beginScan() {
	t.scan++
}

// sweep forgets every path the rescan begun last did not find and returns
// the pending ones.
func (t *tracker) sweep() (pending []string) {
	for p, r := range t.files {
		if r.scan != t.scan && t.drop(p) {
			pending = append(pending, p)
		}
	}
	t.prune()
	return pending
}

// prune forgets the emitted identities that no tracked file has, once they
// outnumber the files: each is a file that has left the tree (the agent
// deleted it after upload), and a file that comes back has a new ctime and so
// a new identity anyway. Without it the set would grow with every dump the
// node ever had.
func (t *tracker) prune() {
	if len(t.emitted) <= 2*len(t.files)+1024 {
		return
	}
	kept := make(map[Identity]struct{}, len(t.files))
	for _, r := range t.files {
		if id := r.last.identity(); t.has(id) {
			kept[id] = struct{}{}
		}
		if r.state != nil && r.state.hasEmitted && t.has(r.state.emitted) {
			kept[r.state.emitted] = struct{}{}
		}
	}
	t.emitted = kept
}

func (t *tracker) has(id Identity) bool {
	_, ok := t.emitted[id]
	return ok
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
