package detect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
)

// Source says how a file was first noticed.
type Source string

const (
	// SourceWatch: an fsnotify event.
	SourceWatch Source = "Watch"
	// SourcePoll: a periodic rescan.
	SourcePoll Source = "Poll"
	// SourceRescan: the rescan at start or one after a watch error.
	SourceRescan Source = "Rescan"
)

// Modes reported by Detector.Mode and Options.OnMode.
const (
	// ModeWatch: fsnotify events, backed by periodic rescans if PollInterval
	// is set.
	ModeWatch = "watch"
	// ModePoll: periodic rescans alone, because watching was disabled or
	// could not be set up.
	ModePoll = "poll"
)

// fallbackPollInterval is the rescan interval when polling is all there is
// and the caller asked for none.
const fallbackPollInterval = 10 * time.Second

// Identity tells one version of one file from every other. Anything that
// changes the inode's ctime (a write, chmod, chown, rename, link) makes a new
// identity.
type Identity struct {
	Device     uint64
	Inode      uint64
	CtimeNanos int64
	Size       int64
}

// String returns "<device>:<inode>:<ctime ns>:<size>", all decimal. The form
// is stable: callers may store it and compare it later.
func (id Identity) String() string {
	return fmt.Sprintf("%d:%d:%d:%d", id.Device, id.Inode, id.CtimeNanos, id.Size)
}

// File is a complete core file.
type File struct {
	// Path is the absolute path.
	Path string
	// RelPath is relative to Options.Dir, with '/' separators.
	RelPath  string
	Identity Identity
	ModTime  time.Time
	// Source is how it was first noticed.
	Source Source
	// SeenAt is when it was first noticed.
	SeenAt time.Time
	// CompleteAt is when it was judged complete.
	CompleteAt time.Time
	// Previous is the identity this file (the same inode at the same path)
	// had when it was last emitted, if it was: it changed after it was
	// judged complete, and this emission supersedes that one.
	Previous *Identity
	// Cut is set when the file is shorter than it declares and was emitted
	// only because it stayed still for Options.CutQuietTime.
	Cut bool
}

// DefaultCutQuietFactor times SettleTime is CutQuietTime when it is not set.
const DefaultCutQuietFactor = 10

// Options configure a Detector.
type Options struct {
	// Dir is the directory the kernel writes cores into. It must exist and
	// be a directory; it may itself be a symbolic link, nothing below it may.
	Dir string
	// PollInterval is how often to rescan the whole tree. 0 disables
	// periodic rescans while watching works; when it does not, the
	// detector polls every 10s.
	PollInterval time.Duration
	// SettleTime is how long size and mtime must stay the same before a
	// file is complete, when its process cannot be checked. Required.
	SettleTime time.Duration
	// DeclaredSize, if set, returns the size the file at path says it will
	// have when its writer is done (a core's program headers say where it
	// ends), and false when it says nothing. It is the one place where the
	// detector has a file read, through the caller; it is called with the
	// detector's lock held, only for a file whose process cannot be checked,
	// once it has been still for SettleTime, and once per version of it.
	DeclaredSize func(path string) (int64, bool)
	// CutQuietTime is how long a file shorter than its DeclaredSize must
	// stay still before it is taken as cut and emitted as it is; default
	// DefaultCutQuietFactor × SettleTime, and never less than SettleTime.
	CutQuietTime time.Duration
	// DisableWatch skips fsnotify and polls only.
	DisableWatch bool
	// ProcRoot is the host's /proc as mounted in the agent. "" means never
	// check PIDs.
	ProcRoot string
	// HostPID returns the host PID encoded in a core file's base name, if
	// any. May be nil.
	HostPID func(name string) (int64, bool)
	// Clock defaults to the real clock.
	Clock  clock.WithTicker
	Logger logr.Logger
	// OnMode, if set, is called with ModeWatch or ModePoll when the mode is
	// decided and whenever it changes.
	OnMode func(mode string)
	// OnFound, if set, is called once per emitted file, for a metric.
	OnFound func(src Source)
	// OnSeen, if set, is called the first time a file is seen at a path,
	// while it may still be being written: the moment to read facts that
	// vanish with the dumping process (its cgroup). It is called with the
	// detector's lock held and must return quickly.
	OnSeen func(path string)
}

// Detector finds complete core files. Create it with New and call Run once.
type Detector struct {
	opts    Options
	dir     string
	clock   clock.WithTicker
	log     logr.Logger
	recheck time.Duration

	// newWatcher and fallbackPoll are variables so that tests can make
	// watching fail and keep the fallback short.
	newWatcher   func() (*fsnotify.Watcher, error)
	fallbackPoll time.Duration

	started atomic.Bool
	mode    atomic.Pointer[string]

	// mu guards t; Forget is called from other goroutines.
	mu sync.Mutex
	t  *tracker

	// Owned by the Run goroutine.
	watcher *fsnotify.Watcher
	watched map[string]struct{}
	// dirBuf and pathBuf are walk's buffers, kept between rescans; mu
	// guards them.
	dirBuf  []byte
	pathBuf []byte
}

// dirBufSize is how much of a directory listing walk reads at once: a few
// hundred entries.
const dirBufSize = 32 << 10

// New validates opts and returns a Detector.
func New(opts Options) (*Detector, error) {
	if opts.Dir == "" {
		return nil, errors.New("detect: Dir is required")
	}
	if opts.SettleTime <= 0 {
		return nil, fmt.Errorf("detect: SettleTime must be positive, got %s", opts.SettleTime)
	}
	if opts.PollInterval < 0 {
		return nil, fmt.Errorf("detect: PollInterval must not be negative, got %s", opts.PollInterval)
	}
	if opts.CutQuietTime < 0 {
		return nil, fmt.Errorf("detect: CutQuietTime must not be negative, got %s", opts.CutQuietTime)
	}
	if opts.CutQuietTime == 0 {
		opts.CutQuietTime = DefaultCutQuietFactor * opts.SettleTime
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("detect: resolving Dir %q: %w", opts.Dir, err)
	}
	if err := requireDir(dir); err != nil {
		return nil, fmt.Errorf("detect: Dir: %w", err)
	}
	if opts.ProcRoot != "" {
		// A wrong ProcRoot would make every process look gone and cut the
		// settle time short for files still being written.
		if err := requireDir(opts.ProcRoot); err != nil {
			return nil, fmt.Errorf("detect: ProcRoot: %w", err)
		}
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	log := opts.Logger
	if log.GetSink() == nil {
		log = logr.Discard()
	}
	return &Detector{
		opts:         opts,
		dir:          dir,
		clock:        clk,
		log:          log.WithValues("dir", dir),
		recheck:      recheckInterval(opts.SettleTime, opts.HostPID != nil && opts.ProcRoot != ""),
		newWatcher:   fsnotify.NewWatcher,
		fallbackPoll: fallbackPollInterval,
		t:            newTracker(dir, opts.SettleTime, opts.CutQuietTime),
	}, nil
}

func requireDir(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("checking %s: %w", path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", path)
	}
	return nil
}

// recheckInterval is how often pending files are looked at again. Events
// alone cannot say a file has stopped changing: silence is the signal.
// A quarter of the settle time bounds the overshoot; 250ms keeps the PID
// path quick; 20ms keeps a tiny settle time from spinning.
func recheckInterval(settle time.Duration, checksPID bool) time.Duration {
	d := max(min(settle/4, 250*time.Millisecond), 20*time.Millisecond)
	if checksPID {
		// A file whose process is gone needs only a confirming look
		// pidConfirm later: look often enough that it is not kept waiting.
		d = min(d, pidConfirm/2)
	}
	return d
}

// Mode returns ModeWatch or ModePoll. It returns "" until Run has set up
// watching and finished its first scan, which is also when a failure to
// watch part of the tree would have shown.
func (d *Detector) Mode() string {
	if m := d.mode.Load(); m != nil {
		return *m
	}
	return ""
}

// publishMode makes the current mode visible and reports a change. It runs
// in the Run loop with no lock held, so OnMode may call back into d.
func (d *Detector) publishMode() {
	mode := ModePoll
	if d.watcher != nil {
		mode = ModeWatch
	}
	if old := d.mode.Swap(&mode); old != nil && *old == mode {
		return
	}
	if d.opts.OnMode != nil {
		d.opts.OnMode(mode)
	}
}

// Forget drops what the detector knows about path (a File.Path, or a
// File.RelPath), which the agent has deleted, so that a new file at the same
// path is judged from scratch.
// Identities already emitted stay emitted: if the file is in fact still
// there unchanged, it is not emitted again.
func (d *Detector) Forget(path string) {
	if !filepath.IsAbs(path) {
		path = filepath.Join(d.dir, path)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.t.drop(filepath.Clean(path))
}

// Run finds complete core files and sends them to out until ctx is done,
// then returns nil. It does not close out. A Detector runs once.
func (d *Detector) Run(ctx context.Context, out chan<- File) error {
	if out == nil {
		return errors.New("detect: Run needs an output channel")
	}
	if !d.started.CompareAndSwap(false, true) {
		return errors.New("detect: Run called twice")
	}
	d.startWatching()
	defer d.stopWatching()

	var poll clock.Ticker
	defer func() {
		if poll != nil {
			poll.Stop()
		}
	}()
	// recheck fires only while something is pending, so an idle detector
	// wakes only for polls.
	var recheck <-chan time.Time

	ready := d.rescan(SourceRescan)
	for {
		d.publishMode()
		if !d.emit(ctx, out, ready) {
			return nil
		}
		ready = nil
		if poll == nil {
			if interval := d.pollInterval(); interval > 0 {
				poll = d.clock.NewTicker(interval)
			}
		}
		if recheck == nil && d.hasPending() {
			recheck = d.clock.After(d.recheck)
		}
		var events <-chan fsnotify.Event
		var errs <-chan error
		if d.watcher != nil {
			events, errs = d.watcher.Events, d.watcher.Errors
		}
		var pollC <-chan time.Time
		if poll != nil {
			pollC = poll.C()
		}

		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-events:
			if !ok {
				d.fallBackToPolling(errors.New("fsnotify event channel closed"))
				continue
			}
			ready = d.handleEvent(ev)
		case err, ok := <-errs:
			if !ok {
				d.fallBackToPolling(errors.New("fsnotify error channel closed"))
				continue
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				d.log.Info("File watch queue overflowed, rescanning")
			} else {
				d.log.Error(err, "File watch failed, rescanning")
			}
			ready = d.rescan(SourceRescan)
		case <-pollC:
			ready = d.rescan(SourcePoll)
		case <-recheck:
			recheck = nil
			ready = d.checkPending()
		}
	}
}

// pollInterval is the rescan interval for the current mode; 0 means none.
func (d *Detector) pollInterval() time.Duration {
	if d.watcher == nil && d.opts.PollInterval == 0 {
		return d.fallbackPoll
	}
	return d.opts.PollInterval
}

func (d *Detector) hasPending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.t.pending) > 0
}

// emit sends files to out, reporting false if ctx ended first.
func (d *Detector) emit(ctx context.Context, out chan<- File, files []ready) bool {
	for _, r := range files {
		f := r.File
		select {
		case out <- f:
		case <-ctx.Done():
			return false
		}
		log := d.log.WithValues("path", f.Path, "identity", f.Identity.String(), "size", f.Identity.Size, "source", f.Source)
		switch {
		case r.changed:
			// Settling should prevent this for ordinary writers; seeing it
			// means the settle time is too short for this node.
			log.Info("Core file changed after it was emitted, emitted it again", "previousIdentity", r.previous.String())
		case f.Cut:
			log.Info("Core file is shorter than its headers say and has not changed for the cut quiet time: taking it as cut",
				"declaredSize", r.declared, "cutQuietTime", d.opts.CutQuietTime.String())
		default:
			log.Info("Found complete core file", "waited", f.CompleteAt.Sub(f.SeenAt).String())
		}
		if d.opts.OnFound != nil {
			d.opts.OnFound(f.Source)
		}
	}
	return true
}

// startWatching sets up fsnotify on Dir, or settles for polling.
func (d *Detector) startWatching() {
	if d.opts.DisableWatch {
		d.log.Info("File watching disabled, polling only", "interval", d.pollInterval().String())
		return
	}
	w, err := d.newWatcher()
	if err != nil {
		d.fallBackToPolling(fmt.Errorf("creating watcher: %w", err))
		return
	}
	d.watcher = w
	d.watched = map[string]struct{}{}
	// The root is watched before the first scan lists it, so nothing
	// created meanwhile is missed.
	if err := d.watcher.Add(d.dir); err != nil {
		d.fallBackToPolling(fmt.Errorf("watching %s: %w", d.dir, err))
		return
	}
	d.watched[d.dir] = struct{}{}
}

func (d *Detector) stopWatching() {
	if d.watcher == nil {
		return
	}
	if err := d.watcher.Close(); err != nil {
		d.log.V(1).Info("Closing the file watcher failed", "err", err.Error())
	}
	d.watcher = nil
	d.watched = nil
}

// fallBackToPolling gives up on fsnotify for the life of the detector: a
// watch limit or an unsupported filesystem will not go away by itself, and
// a tree watched in part would miss files silently.
func (d *Detector) fallBackToPolling(cause error) {
	d.stopWatching()
	d.log.Info("Cannot watch the core directory, polling only", "err", cause.Error(), "interval", d.pollInterval().String())
}

// watch adds a watch on dir, a directory under Dir, if we are watching.
func (d *Detector) watch(dir string) {
	if d.watcher == nil {
		return
	}
	if _, ok := d.watched[dir]; ok {
		return
	}
	err := d.watcher.Add(dir)
	switch {
	case err == nil:
		d.watched[dir] = struct{}{}
	case errors.Is(err, os.ErrNotExist), errors.Is(err, os.ErrPermission):
		// Gone already, or unreadable: a rescan could not look inside it
		// either, so there is nothing to fall back to.
		d.log.V(1).Info("Cannot watch directory", "path", dir, "err", err.Error())
	default:
		d.fallBackToPolling(fmt.Errorf("watching %s: %w", dir, err))
	}
}

// unwatchTree drops the watches on dir and below it. fsnotify drops a
// renamed directory's own watch but not those of its subdirectories, which
// would go on reporting events under the old path.
func (d *Detector) unwatchTree(dir string) (wasWatched bool) {
	if d.watcher == nil {
		return false
	}
	prefix := dir + string(filepath.Separator)
	for p := range d.watched {
		if p == dir || strings.HasPrefix(p, prefix) {
			wasWatched = true
			delete(d.watched, p)
			// Already gone from the kernel in most cases.
			_ = d.watcher.Remove(p)
		}
	}
	return wasWatched
}

// hidden reports whether a name is to be ignored (see the package comment).
func hidden[T string | []byte](name T) bool {
	return len(name) > 0 && name[0] == '.'
}

// rescan walks the whole tree, records what it finds, forgets what it no
// longer finds, and judges what is pending.
func (d *Detector) rescan(src Source) []ready {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.t.beginScan()
	if err := d.walk(d.dir, src, true); err != nil {
		// Keep what we know: a tree we cannot read now says nothing
		// about the files in it.
		d.log.Error(err, "Cannot scan the core directory")
		return d.judgePendingLocked()
	}
	for _, p := range d.t.sweep() {
		d.log.V(1).Info("Core file vanished before it was complete", "path", p)
	}
	return d.judgePendingLocked()
}

// walk records every regular file under dir. The root may be reached
// through a symbolic link; every directory below is opened without
// following one, so a link swapped in for a directory cannot lead the
// walk out of the tree.
//
// The directory is read in batches into one buffer and each file is
// looked at relative to the open directory, so that a rescan of a tree the
// detector already knows allocates next to nothing however many files it
// holds: the agent rescans every poll interval for as long as it runs.
func (d *Detector) walk(dir string, src Source, root bool) error {
	// Watch before listing, so a file created in between is not missed.
	d.watch(dir)
	if d.dirBuf == nil {
		d.dirBuf = make([]byte, dirBufSize)
	}
	path := append(d.pathBuf[:0], dir...)
	path = append(path, filepath.Separator)
	prefix := len(path)
	var subdirs []string
	now := d.clock.Now()
	err := scanDir(dir, !root, d.dirBuf, func(name []byte, e entry) {
		path = append(path[:prefix], name...)
		switch e.kind {
		case entryDir:
			// After this listing: the buffer is in use until then.
			subdirs = append(subdirs, string(path))
		case entryRegular:
			if stored, first := d.t.observeName(path, e.obs, src, now); first && d.opts.OnSeen != nil {
				d.opts.OnSeen(stored)
			}
		case entryError:
			d.log.V(1).Info("Cannot stat file", "path", string(path), "err", e.err.Error())
		}
		// Anything else (gone, not a regular file) is not recorded, so
		// the sweep after the rescan forgets whatever was there before.
	})
	d.pathBuf = path[:0]
	if err != nil {
		if root {
			return fmt.Errorf("reading %s: %w", dir, err)
		}
		d.log.V(1).Info("Cannot read directory", "path", dir, "err", err.Error())
		return nil
	}
	for _, sub := range subdirs {
		if err := d.walk(sub, src, false); err != nil {
			return err
		}
	}
	return nil
}

// observeLocked stats path and records it, reporting whether it is a regular
// file. Anything else that sits at a tracked path is dropped.
func (d *Detector) observeLocked(path string, src Source) bool {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() {
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			d.log.V(1).Info("Cannot stat file", "path", path, "err", err.Error())
		}
		if d.t.drop(path) {
			d.log.V(1).Info("Core file vanished before it was complete", "path", path)
		}
		return false
	}
	if d.t.observe(path, observationOf(fi), src, d.clock.Now()) && d.opts.OnSeen != nil {
		d.opts.OnSeen(path)
	}
	return true
}

// handleEvent acts on one fsnotify event. Events are hints: whatever the
// operation, the path is looked at again and the filesystem decides. A file
// that appears (created, or renamed or linked in whole) is also judged at
// once, so that one already complete is not kept until the next recheck.
func (d *Detector) handleEvent(ev fsnotify.Event) []ready {
	path := filepath.Clean(ev.Name)
	gone := ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	wasDir := gone && d.unwatchTree(path)
	if path == d.dir || hidden(filepath.Base(path)) {
		// The root's own events matter only for the watch dropped above,
		// which the next rescan puts back if the root comes back.
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fi, err := os.Lstat(path)
	switch {
	case err != nil:
		if !errors.Is(err, os.ErrNotExist) {
			d.log.V(1).Info("Cannot stat file", "path", path, "err", err.Error())
		}
		if wasDir {
			for _, p := range d.t.dropTree(path) {
				d.log.V(1).Info("Core file vanished before it was complete", "path", p)
			}
		}
		if d.t.drop(path) {
			d.log.V(1).Info("Core file vanished before it was complete", "path", path)
		}
	case fi.IsDir():
		// Files may have landed in it before its watch existed.
		if err := d.walk(path, SourceWatch, false); err != nil {
			d.log.Error(err, "Cannot scan new directory", "path", path)
		}
	case ev.Has(fsnotify.Create):
		// PID first, then stat: see complete.
		pid := d.pidState(path)
		if d.observeLocked(path, SourceWatch) {
			d.readDeclaredLocked(path, pid)
			if r, ok := d.t.judge(path, pid, d.clock.Now()); ok {
				return []ready{r}
			}
		}
	default:
		d.observeLocked(path, SourceWatch)
	}
	return nil
}

// checkPending looks at every pending file again and judges it.
func (d *Detector) checkPending() []ready {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.judgePendingLocked()
}

func (d *Detector) judgePendingLocked() []ready {
	var out []ready
	for _, path := range d.t.pendingPaths() {
		s, ok := d.t.pending[path]
		if !ok {
			continue
		}
		// PID first, then stat: see complete.
		pid := d.pidState(path)
		if !d.observeLocked(path, s.source) {
			continue
		}
		d.readDeclaredLocked(path, pid)
		if r, ok := d.t.judge(path, pid, d.clock.Now()); ok {
			out = append(out, r)
		}
	}
	return out
}

// readDeclaredLocked asks what size the pending file at path declares, when
// the settle-time rule is about to judge it (see fileState.needsDeclared).
func (d *Detector) readDeclaredLocked(path string, pid pidState) {
	s, ok := d.t.pending[path]
	if !ok || d.opts.DeclaredSize == nil || !s.needsDeclared(pid, d.opts.SettleTime) {
		return
	}
	size, declared := d.opts.DeclaredSize(path)
	s.setDeclared(size, declared)
	if s.short() {
		d.log.Info("Core file is shorter than its headers say: waiting for the rest", "path", path,
			"size", s.last.size, "declaredSize", size, "cutAfter", d.opts.CutQuietTime.String())
	}
}

// pidState checks whether the process that dumped path still exists.
func (d *Detector) pidState(path string) pidState {
	if d.opts.ProcRoot == "" || d.opts.HostPID == nil {
		return pidUnknown
	}
	pid, ok := d.opts.HostPID(filepath.Base(path))
	if !ok || pid <= 0 {
		return pidUnknown
	}
	_, err := os.Lstat(filepath.Join(d.opts.ProcRoot, strconv.FormatInt(pid, 10)))
	switch {
	case err == nil:
		return pidAlive
	case errors.Is(err, os.ErrNotExist):
		return pidGone
	default:
		// Unsure is not gone: fall back to the settle time.
		d.log.V(1).Info("Cannot check dumping process", "path", path, "pid", pid, "err", err.Error())
		return pidUnknown
	}
}
