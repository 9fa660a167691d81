// Package modstore keeps, on the node, the module files (executables and
// shared libraries) collected from crashing processes, one copy per GNU
// build-id, for the manager to fetch and for the node's unwinder to read
// CFI and symbols from (Store.Open). It owns the directory
// <hostPath>/.coredog/modules, its bounds (files, bytes, free space) and
// the per-core manifests that say which build-ids a core's collection took
// and why others were not taken; Collect fills it from /proc/<pid>/map_files
// while the kernel holds the process.
//
// The files are the container's choice and hostile: a file is copied into
// a temporary name created with O_EXCL|O_NOFOLLOW relative to the verified
// directory (hostdir), its build-id is read from the copy (never from the
// source again), and it is kept under that build-id only when it is the one
// the core names. It must not decide what is uploaded or talk to the API
// server.
package modstore

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/agent/nodeguard"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/wire"
)

// DirName is the store's directory inside the receiver's install directory.
const DirName = "modules"

// Bounds of the store.
const (
	// MaxFileBytes is the largest file collected.
	MaxFileBytes = wire.MaxModuleBytes
	// MaxFiles bounds the files kept on the node.
	MaxFiles = 1024
	// MaxBytes bounds the bytes kept on the node, whatever the policy's
	// maxNodeUsage (Limits.MaxBytes lowers it).
	MaxBytes = 4 << 30
	// MaxPerCore bounds the modules collected for one core.
	MaxPerCore = 256
	// maxManifests bounds the manifests read when deciding what is still
	// needed.
	maxManifests = 4096
	// maxManifestBytes bounds one manifest.
	maxManifestBytes = 256 << 10
	tmpPrefix        = ".tmp-"
	manifestPrefix   = "core-"
	manifestSuffix   = ".json"
)

// Sentinel errors of Add.
var (
	ErrTooLarge  = errors.New("module file too large")
	ErrNodeLimit = errors.New("no room for the module under the node's limits")
)

// Limits are the node's bounds on the store, on top of MaxFiles and
// MaxBytes.
type Limits struct {
	// MaxBytes lowers MaxBytes (0: MaxBytes).
	MaxBytes int64
	// MinFree and MinFreePercent are the policy's minNodeFree.
	MinFree        int64
	MinFreePercent int
}

// Store is the open store directory.
type Store struct {
	dir    *hostdir.Dir
	limits Limits
}

// Open opens (creating it, 0700) the store directory inside inst, a
// verified install directory (receive.OpenInstallDir).
func Open(inst *hostdir.Dir, limits Limits) (*Store, error) {
	d, err := inst.Ensure(DirName, 0o700)
	if err != nil {
		return nil, fmt.Errorf("the module store: %w", err)
	}
	return &Store{dir: d, limits: limits}, nil
}

// Close closes the directory.
func (s *Store) Close() error { return s.dir.Close() }

// Path is the store directory's path.
func (s *Store) Path() string { return s.dir.Path() }

// Open opens the file collected for a build-id: a regular file root wrote
// in the store, opened without following links. This is how the node's
// unwinder and the agent's server read modules.
func (s *Store) Open(id string) (*os.File, error) {
	if !buildid.Valid(id) {
		return nil, fmt.Errorf("%q is not a build-id: %w", id, os.ErrNotExist)
	}
	return s.dir.OpenOwn(id, unix.O_RDONLY)
}

// Has reports whether the store holds a file for id.
func (s *Store) Has(id string) bool {
	f, err := s.Open(id)
	if err != nil {
		return false
	}
	_ = f.Close()
	return true
}

// lock takes the store's lock (a flock of its directory): Add and the
// manifest writes of one collection, and GC, exclude each other across
// processes (receivers and the agent).
func (s *Store) lock() (unlock func(), err error) {
	if err := unix.Flock(s.dir.Fd(), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("locking %s: %w", s.dir.Path(), err)
	}
	return func() { _ = unix.Flock(s.dir.Fd(), unix.LOCK_UN) }, nil
}

// usage counts the build-id files and their bytes; the lock must be held.
func (s *Store) usage() (files int, bytes int64, err error) {
	ents, err := s.entries()
	if err != nil {
		return 0, 0, err
	}
	for _, e := range ents {
		if !buildid.Valid(e) {
			continue
		}
		var st unix.Stat_t
		if err := unix.Fstatat(s.dir.Fd(), e, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		files++
		bytes += st.Blocks * 512
	}
	return files, bytes, nil
}

// entries lists the directory, at most MaxFiles+maxManifests+64 names.
func (s *Store) entries() ([]string, error) {
	fd, err := unix.Openat(s.dir.Fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), s.dir.Path())
	defer f.Close()
	names, err := f.Readdirnames(MaxFiles + maxManifests + 64)
	if errors.Is(err, io.EOF) {
		err = nil
	}
	return names, err
}

// room checks that n more bytes fit the store's bounds; the lock must be
// held.
func (s *Store) room(n int64) error {
	files, used, err := s.usage()
	if err != nil {
		return err
	}
	limit := int64(MaxBytes)
	if s.limits.MaxBytes > 0 {
		limit = min(limit, s.limits.MaxBytes)
	}
	if files >= MaxFiles || used+n > limit {
		return fmt.Errorf("%w: %d files of %d bytes held, %d more bytes asked for", ErrNodeLimit, files, used, n)
	}
	l := nodeguard.Limits{MinFree: s.limits.MinFree, MinFreePercent: s.limits.MinFreePercent}
	if s.limits.MinFree > 0 || s.limits.MinFreePercent > 0 {
		var st unix.Statfs_t
		if err := unix.Fstatfs(s.dir.Fd(), &st); err != nil {
			return fmt.Errorf("measuring free space: %w", err)
		}
		unit := st.Frsize
		if unit <= 0 {
			unit = st.Bsize
		}
		total, free := int64(st.Blocks)*unit, int64(st.Bavail)*unit
		if free-n < l.KeepFree(total) {
			return fmt.Errorf("%w: free space would fall under minNodeFree", ErrNodeLimit)
		}
	}
	return nil
}

// Add copies src (size bytes, by its fstat) into the store as the file of
// build-id id. The copy's own build-id must be id (buildid.ErrMismatch
// otherwise, and nothing is kept). A file already held for id is kept as it
// is. src is read at most MaxFileBytes bytes.
func (s *Store) Add(id string, src io.Reader, size int64) error {
	if !buildid.Valid(id) {
		return fmt.Errorf("%q is not a build-id", id)
	}
	if size > MaxFileBytes {
		return fmt.Errorf("%w: %d bytes", ErrTooLarge, size)
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	return s.add(id, src, size)
}

func (s *Store) add(id string, src io.Reader, size int64) error {
	if s.Has(id) {
		return nil
	}
	if err := s.room(size); err != nil {
		return err
	}
	var suffix [8]byte
	_, _ = rand.Read(suffix[:])
	tmp := tmpPrefix + hex.EncodeToString(suffix[:])
	f, err := s.dir.Create(tmp, 0o600)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		_ = f.Close()
		if !ok {
			_ = s.dir.Remove(tmp)
		}
	}()
	n, err := io.Copy(f, io.LimitReader(src, MaxFileBytes+1))
	if err != nil {
		return fmt.Errorf("copying the module: %w", err)
	}
	if n > MaxFileBytes {
		return fmt.Errorf("%w: more than %d bytes", ErrTooLarge, int64(MaxFileBytes))
	}
	if n > size {
		// It grew while it was copied: judge what was copied against the
		// bounds once more.
		if err := s.room(n); err != nil {
			return err
		}
	}
	if err := f.Sync(); err != nil {
		return err
	}
	// The build-id is read from the copy, which no one else can change.
	r, err := s.dir.OpenOwn(tmp, unix.O_RDONLY)
	if err != nil {
		return err
	}
	_, err = buildid.Verify(r, n, id)
	_ = r.Close()
	if err != nil {
		return fmt.Errorf("checking the module's build-id: %w", err)
	}
	err = unix.Renameat2(s.dir.Fd(), tmp, s.dir.Fd(), id, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("moving the module into place: %w", err)
	}
	ok = true
	return nil
}

// Manifest is what the collection for one core did: each module of the
// core with its outcome.
type Manifest struct {
	Modules []wire.Module `json:"modules"`
}

// manifestName is the manifest of the core named core (a base name): a
// hash, so that any core name makes a plain, short file name.
func manifestName(core string) string {
	sum := sha256.Sum256([]byte(core))
	return manifestPrefix + hex.EncodeToString(sum[:16]) + manifestSuffix
}

// WriteManifest records the outcome of a core's collection.
func (s *Store) WriteManifest(core string, m Manifest) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(data) > maxManifestBytes {
		return fmt.Errorf("the manifest of %d modules is over %d bytes", len(m.Modules), maxManifestBytes)
	}
	return s.dir.WriteFile(manifestName(core), 0o600, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// ReadManifest reads the manifest of the core named core; ok is false when
// there is none.
func (s *Store) ReadManifest(core string) (m Manifest, ok bool, err error) {
	data, err := s.dir.ReadFile(manifestName(core), maxManifestBytes)
	if errors.Is(err, os.ErrNotExist) {
		return m, false, nil
	}
	if err != nil {
		return m, false, err
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return m, false, fmt.Errorf("reading the module manifest: %w", err)
	}
	return m, true, nil
}

// Release forgets the core named core (its CoreDump is final or gone) and
// removes every file no remaining manifest lists as collected.
func (s *Store) Release(core string) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.dir.Remove(manifestName(core)); err != nil {
		return err
	}
	return s.gc()
}

// gc removes build-id files that no manifest lists as collected, and
// temporary files left by a collector that died; the lock must be held.
func (s *Store) gc() error {
	names, err := s.entries()
	if err != nil {
		return err
	}
	keep := map[string]bool{}
	manifests := 0
	for _, n := range names {
		if !strings.HasPrefix(n, manifestPrefix) || !strings.HasSuffix(n, manifestSuffix) {
			continue
		}
		if manifests++; manifests > maxManifests {
			// Too many to judge: keep everything rather than delete a
			// file a core still needs.
			return nil
		}
		data, err := s.dir.ReadFile(n, maxManifestBytes)
		if err != nil {
			continue
		}
		var m Manifest
		if json.Unmarshal(data, &m) != nil {
			continue
		}
		for _, mod := range m.Modules {
			if mod.Collected {
				keep[mod.BuildID] = true
			}
		}
	}
	var errs []error
	for _, n := range names {
		if (buildid.Valid(n) && !keep[n]) || strings.HasPrefix(n, tmpPrefix) {
			errs = append(errs, s.dir.Remove(n))
		}
	}
	return errors.Join(errs...)
}
