// Package receive is the kernel's core-dump pipe handler for corePattern
// Pipe. With a path core_pattern the kernel writes a core inside the
// crashing process's own mount namespace, which for a container is the
// container's filesystem, out of the agent's sight. With a pipe pattern the
// kernel runs a helper in the host's namespaces and hands it the core on
// stdin; this package is that helper. The agent installs a copy of its own
// binary and a small configuration under hostPath, and the kernel runs
// `<hostPath>/.coredog/agent receive %P %p %I %i %s %t %u %g %d %h %e`.
//
// It reads the process's cgroup while the process still exists, writes the
// core under a dot name (which detection ignores), and renames the finished
// file into place under the policy's file name pattern, so the agent sees
// only complete files. It owns that hand-over; it never talks to the API
// server, and it never writes outside the configured directory and its own
// install directory.
//
// The kernel runs the receiver as root, so the install directory must be one
// that only root can change (hostdir.Open), created by the agent; every file
// in it and in the core directory is created with O_EXCL and O_NOFOLLOW
// relative to a verified descriptor. Receivers share a node-wide bound: at
// most MaxReceivers run at once (the others drain their core and exit), their
// cores together hold at most MaxInFlight bytes, and none writes into the
// space minNodeFree keeps. The count lives in slot files under a flock, which
// the kernel drops when a receiver dies.
package receive

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/hostdir"
	"github.com/coredog/coredog/agent/nodeguard"
)

// Layout under hostPath.
const (
	// InstallDir holds the installed binary and its configuration.
	InstallDir = ".coredog"
	// BinaryName is the installed copy of the agent.
	BinaryName = "agent"
	// ConfigName is the receiver's configuration, written by the agent.
	ConfigName = "receive.json"
	// CgroupSuffix names the sidecar that keeps a core's cgroup: ".<core name>.cgroup".
	CgroupSuffix = ".cgroup"
	// LogName is the receivers' log in the install directory.
	LogName = "receive.log"
	// slotPrefix names the slot files: slot-0 … slot-<MaxReceivers-1>.
	slotPrefix = "slot-"
	// receivingPrefix names a core being written.
	receivingPrefix = ".receiving-"
)

// DefaultMaxReceivers is how many receivers may run on a node at once. The
// kernel starts one per crash; beyond this they drain their core and exit.
const DefaultMaxReceivers = 4

const (
	// maxSlots bounds MaxReceivers.
	maxSlots = 64
	// reserveChunk is how much a receiver reserves of the node's budget, and
	// of free space, at a time: minNodeFree is kept to within this much per
	// running receiver.
	reserveChunk = 4 << 20
	// maxConfigBytes bounds the configuration read.
	maxConfigBytes = 64 << 10
	// maxLogBytes is where the log starts afresh.
	maxLogBytes = 1 << 20
)

// ErrBusy is returned when MaxReceivers receivers already run on the node.
var ErrBusy = errors.New("the node-wide limit of running receivers is reached")

// errNoRoom is returned when not one byte of a core fits the node's limits.
var errNoRoom = errors.New("no room for the core under maxNodeUsage and minNodeFree")

// Specifiers is what the kernel passes, in this order, after "receive".
// Arguments are split before the kernel expands them (Linux 5.3 and later),
// so %e and %h arrive whole even with spaces in them. %d is the dump mode:
// 2 when fs.suid_dumpable=2 made the kernel dump a privileged process as
// root. SpecifiersWithoutDumpMode is the older list, still used when the
// longer one would not fit the kernel's 127 bytes, and still read.
const (
	Specifiers                = "%P %p %I %i %s %t %u %g %d %h %e"
	SpecifiersWithoutDumpMode = "%P %p %I %i %s %t %u %g %h %e"
)

// DumpModeXattr is the extended attribute in which the receiver leaves a
// core's dump mode (%d, "1" or "2") on the file itself. It is in the
// trusted namespace: only a process with CAP_SYS_ADMIN (the receiver, a
// Pipe agent) can set or read it, so no pod can forge it on a file it owns.
const DumpModeXattr = "trusted.coredog.dumpmode"

// Config is what the agent tells the receiver.
type Config struct {
	// Dir is where cores go (the policy's hostPath).
	Dir string `json:"dir"`
	// FileNamePattern names the files, as a path core_pattern would.
	FileNamePattern string `json:"fileNamePattern"`
	// MaxBytes stops writing a core at this size (0: no limit); the rest of
	// the stream is read and dropped so the kernel can finish.
	MaxBytes int64 `json:"maxBytes,omitempty"`
	// ProcRoot is the host's /proc.
	ProcRoot string `json:"procRoot,omitempty"`
	// MaxReceivers is how many receivers may run at once on the node
	// (0: DefaultMaxReceivers).
	MaxReceivers int `json:"maxReceivers,omitempty"`
	// MaxInFlight is how many bytes the cores being received may hold
	// together (0: no limit).
	MaxInFlight int64 `json:"maxInFlight,omitempty"`
	// MinFree and MinFreePercent are the policy's minNodeFree, as in
	// nodeguard.Limits: a receiver stops writing before free space falls
	// under them.
	MinFree        int64 `json:"minFree,omitempty"`
	MinFreePercent int   `json:"minFreePercent,omitempty"`
}

func (c Config) receivers() int {
	if c.MaxReceivers <= 0 {
		return DefaultMaxReceivers
	}
	return min(c.MaxReceivers, maxSlots)
}

// CorePattern is the core_pattern that runs the receiver installed under dir.
func CorePattern(dir string) string {
	p := "|" + filepath.Join(dir, InstallDir, BinaryName) + " receive " + Specifiers
	if len(p) > maxCorePattern {
		return "|" + filepath.Join(dir, InstallDir, BinaryName) + " receive " + SpecifiersWithoutDumpMode
	}
	return p
}

// maxCorePattern is the longest core_pattern the kernel keeps.
const maxCorePattern = 127

// ParseArgs reads the kernel's arguments (after "receive") into name fields.
func ParseArgs(args []string) (corefile.NameFields, error) {
	var f corefile.NameFields
	dumpMode := ""
	switch len(args) {
	case 11:
		dumpMode = args[8]
		args = append(args[:8:8], args[9:]...)
	case 10:
	default:
		return f, fmt.Errorf("want the 11 values of %q (or the 10 of %q), got %d arguments", Specifiers, SpecifiersWithoutDumpMode, len(args))
	}
	ints := make([]int64, 8)
	for i := range 8 {
		v, err := strconv.ParseInt(args[i], 10, 64)
		if err != nil {
			return f, fmt.Errorf("argument %d (%s): %w", i+1, strings.Fields(Specifiers)[i], err)
		}
		ints[i] = v
	}
	uid, gid := ints[6], ints[7]
	f.HostPID, f.PID, f.HostTID, f.TID = ints[0], ints[1], ints[2], ints[3]
	f.Signal = int(ints[4])
	f.Time = time.Unix(ints[5], 0).UTC()
	f.UID, f.GID = &uid, &gid
	f.Hostname, f.Executable = args[8], args[9]
	// Any other value leaves the dump mode unknown: a flag is no reason to
	// lose a core.
	if dumpMode == "1" || dumpMode == "2" {
		f.DumpMode = int(dumpMode[0] - '0')
	}
	return f, nil
}

// Main is what the kernel runs: it receives one core with the
// configuration installed in installDir (the directory of the running
// binary), args from the kernel and the core on stdin. Whatever happens the
// whole stream is read, so that the kernel is never held up; a failure, a
// refusal and a cut core are logged to receive.log in installDir.
func Main(installDir string, args []string, stdin io.Reader) (err error) {
	defer func() { _, _ = io.Copy(io.Discard, stdin) }()
	// A directory that someone else can change may hold a configuration
	// that sends cores, written by root, anywhere: trust nothing in it.
	inst, err := hostdir.Open(installDir)
	if err != nil {
		return fmt.Errorf("the install directory: %w", err)
	}
	defer inst.Close()
	var res result
	defer func() {
		switch {
		case err != nil:
			appendLog(inst, fmt.Sprintf("receive %q: %v", args, err))
		case res.cut != "":
			appendLog(inst, fmt.Sprintf("receive %q: %s cut at %d bytes: %s", args, filepath.Base(res.path), res.written, res.cut))
		}
	}()
	cfg, err := readConfig(inst)
	if err != nil {
		return err
	}
	b, err := acquire(inst, cfg.receivers(), cfg.MaxInFlight)
	if err != nil {
		return err
	}
	defer b.release()
	res, err = run(cfg, b, args, stdin)
	if err != nil {
		return err
	}
	// The core is in place and the kernel still holds the process: this
	// is when its files can be collected.
	if cerr := collectModules(inst, cfg, args, res.path); cerr != nil {
		appendLog(inst, fmt.Sprintf("receive %q: collecting modules of %s: %v", args, filepath.Base(res.path), cerr))
	}
	return nil
}

// result is what run did.
type result struct {
	path    string
	written int64
	// cut says why the core was cut short, if it was.
	cut string
}

// run receives one core into cfg.Dir under the node-wide budget b (nil: none).
func run(cfg Config, b *budget, args []string, stdin io.Reader) (result, error) {
	// Whatever happens, read the whole stream: the kernel waits for the
	// helper, and a helper that stops reading stalls the dying process.
	defer func() { _, _ = io.Copy(io.Discard, stdin) }()
	var res result
	pattern, err := corefile.ParsePattern(cfg.FileNamePattern)
	if err != nil {
		return res, err
	}
	fields, err := ParseArgs(args)
	if err != nil {
		return res, err
	}
	// The dying process exists while the kernel feeds us its core (the
	// agent sets core_pipe_limit so that the kernel waits for us); read its
	// cgroup before the core.
	var cgroup []byte
	if cfg.ProcRoot != "" && fields.HostPID > 0 {
		cgroup, _ = readCgroup(filepath.Join(cfg.ProcRoot, strconv.FormatInt(fields.HostPID, 10), "cgroup"))
	}
	name := pattern.Render(fields)
	if name == "" || strings.ContainsAny(name, "/\x00") || strings.HasPrefix(name, ".") || len(name) > 255 {
		return res, fmt.Errorf("the pattern renders an unusable file name %q", name)
	}
	// Pods may write into the core directory: every entry is made relative
	// to this descriptor, exclusively, never through a link.
	host, err := hostdir.OpenShared(cfg.Dir)
	if err != nil {
		return res, fmt.Errorf("the core directory: %w", err)
	}
	defer host.Close()
	suffix := make([]byte, 6)
	_, _ = rand.Read(suffix)
	tmp := receivingPrefix + hex.EncodeToString(suffix)
	f, err := host.Create(tmp, 0o600)
	if err != nil {
		return res, err
	}
	ok := false
	defer func() {
		if !ok {
			_ = host.Remove(tmp)
		}
	}()
	w := &budgetWriter{cfg: cfg, b: b, fd: host.Fd(), f: f}
	res.written, res.cut, err = w.copy(stdin)
	if err == nil && res.written == 0 && res.cut != "" {
		err = fmt.Errorf("%w: %s", errNoRoom, res.cut)
	}
	if err != nil {
		f.Close()
		return res, err
	}
	if fields.DumpMode != 0 {
		// Best effort: on a file system without extended attributes the
		// dump mode stays unknown (see the agent's dumpModeOf).
		_ = unix.Fsetxattr(int(f.Fd()), DumpModeXattr, []byte(strconv.Itoa(fields.DumpMode)), 0)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return res, fmt.Errorf("syncing the core: %w", err)
	}
	if err := f.Close(); err != nil {
		return res, fmt.Errorf("closing the core: %w", err)
	}
	// Keep the cgroup next to the core, for the agent to attribute it.
	if len(cgroup) > 0 {
		writeSidecar(host, "."+name+CgroupSuffix, cgroup)
	}
	// Never replace a file that is there: two crashes can render one name
	// (same second, same PID after a PID wrap); the second gets a suffix.
	final := name
	err = unix.Renameat2(host.Fd(), tmp, host.Fd(), final, unix.RENAME_NOREPLACE)
	if errors.Is(err, unix.EEXIST) {
		final += "." + hex.EncodeToString(suffix)
		err = unix.Renameat2(host.Fd(), tmp, host.Fd(), final, unix.RENAME_NOREPLACE)
	}
	if err != nil {
		return res, fmt.Errorf("moving the core into place as %q: %w", final, err)
	}
	ok = true
	res.path = filepath.Join(host.Path(), final)
	return res, nil
}

// budgetWriter copies a core, taking room from the node's budget and free
// space a chunk at a time before writing into it.
type budgetWriter struct {
	cfg     Config
	b       *budget
	fd      int // the core directory, for statfs
	f       *os.File
	granted int64
}

// copy writes src to the file until src ends or a limit cuts it; cut says
// which limit. The rest of src is left for the caller to drain.
func (w *budgetWriter) copy(src io.Reader) (written int64, cut string, err error) {
	buf := make([]byte, 1<<20)
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			allow := int64(n)
			if w.cfg.MaxBytes > 0 && written+allow > w.cfg.MaxBytes {
				allow = w.cfg.MaxBytes - written
				cut = "the per-core cap (maxNodeUsage)"
			}
			if written+allow > w.granted {
				why, err := w.reserve(written + allow - w.granted)
				if err != nil {
					return written, "", err
				}
				if written+allow > w.granted {
					allow, cut = w.granted-written, why
				}
			}
			if allow > 0 {
				if _, err := w.f.Write(buf[:allow]); err != nil {
					return written, "", fmt.Errorf("writing the core: %w", err)
				}
				written += allow
			}
			if cut != "" {
				return written, cut, nil
			}
		}
		if rerr == io.EOF {
			return written, "", nil
		}
		if rerr != nil {
			return written, "", fmt.Errorf("reading the core: %w", rerr)
		}
	}
}

// fstatfs measures the file system of a directory descriptor; tests replace it.
var fstatfs = realFstatfs

func realFstatfs(fd int) (nodeguard.FSStat, error) {
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return nodeguard.FSStat{}, err
	}
	unit := st.Frsize
	if unit <= 0 {
		unit = st.Bsize
	}
	return nodeguard.FSStat{Total: int64(st.Blocks) * unit, Free: int64(st.Bavail) * unit}, nil
}

// reserve takes at least need more bytes (a chunk, when there is room) from
// free space above minNodeFree and from the node-wide budget. When less is
// granted, why names the limit.
func (w *budgetWriter) reserve(need int64) (why string, err error) {
	want := max(need, reserveChunk)
	limits := nodeguard.Limits{MinFree: w.cfg.MinFree, MinFreePercent: w.cfg.MinFreePercent}
	if w.cfg.MinFree > 0 || w.cfg.MinFreePercent > 0 {
		st, err := fstatfs(w.fd)
		if err != nil {
			return "", fmt.Errorf("measuring free space: %w", err)
		}
		if room := st.Free - limits.KeepFree(st.Total); room < want {
			want, why = max(room, 0), "free space reached minNodeFree"
		}
	}
	if w.b != nil {
		got, err := w.b.reserve(want)
		if err != nil {
			return "", err
		}
		if got < want {
			want, why = got, "the cores being received on the node reached maxNodeUsage"
		}
	}
	w.granted += want
	if want >= need {
		why = ""
	}
	return why, nil
}

func readCgroup(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, 64<<10))
}

// readConfig reads the configuration the agent installed, a file that root
// wrote in the verified install directory.
func readConfig(inst *hostdir.Dir) (Config, error) {
	var c Config
	data, err := inst.ReadFile(ConfigName, maxConfigBytes)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("reading %s: %w", ConfigName, err)
	}
	if !filepath.IsAbs(c.Dir) {
		return c, fmt.Errorf("%s: dir %q is not absolute", ConfigName, c.Dir)
	}
	return c, nil
}

// Install puts a copy of the binary at src and the configuration into
// cfg.Dir/.coredog, a directory the agent creates, owned by root and
// writable by no one else; one that is already there and is not so is
// refused (hostdir.ErrUnsafe), as is a core directory whose entries others
// could rename away. Files are written whole and renamed into place, so that
// the kernel never runs a half-written helper. It returns the core_pattern.
func Install(src string, cfg Config) (string, error) {
	if cfg.MaxReceivers <= 0 {
		cfg.MaxReceivers = DefaultMaxReceivers
	}
	inst, err := OpenInstallDir(cfg.Dir)
	if err != nil {
		return "", err
	}
	defer inst.Close()
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("opening the agent binary: %w", err)
	}
	defer in.Close()
	if err := inst.WriteFile(BinaryName, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	}); err != nil {
		return "", err
	}
	data, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	if err := inst.WriteFile(ConfigName, 0o600, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}); err != nil {
		return "", err
	}
	for i := range cfg.receivers() {
		f, err := inst.Create(slotName(i), 0o600)
		if errors.Is(err, unix.EEXIST) {
			f, err = inst.OpenOwn(slotName(i), unix.O_RDONLY)
		}
		if err != nil {
			return "", fmt.Errorf("receiver slot: %w", err)
		}
		_ = f.Close()
	}
	return CorePattern(cfg.Dir), nil
}

// OpenInstallDir opens dir/.coredog, creating it (0700) if it is missing,
// and verifies it and every directory above it: owned by root, writable by
// no one else (a sticky directory may be crossed). A directory that someone
// else created or can change is refused with hostdir.ErrUnsafe.
func OpenInstallDir(dir string) (*hostdir.Dir, error) {
	host, err := hostdir.OpenShared(dir)
	if err != nil {
		return nil, fmt.Errorf("the core directory: %w", err)
	}
	defer host.Close()
	inst, err := host.Ensure(InstallDir, 0o700)
	if err != nil {
		return nil, fmt.Errorf("the receiver's directory: %w", err)
	}
	return inst, nil
}

// Uninstall removes the installed binary and configuration (the directory
// stays: it holds the agent's saved core_pattern while one runs).
func Uninstall(dir string) error {
	inst, err := hostdir.Open(filepath.Join(dir, InstallDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer inst.Close()
	return errors.Join(inst.Remove(BinaryName), inst.Remove(ConfigName))
}

// writeSidecar leaves the cgroup beside the core. The receiver runs as root
// in the host's namespaces, and pods may write into the directory: whatever
// is at name (a symbolic link to a host file, a FIFO) is unlinked, never
// followed, and the file is created anew, exclusively.
func writeSidecar(host *hostdir.Dir, name string, cgroup []byte) {
	f, err := host.Replace(name, 0o600)
	if err != nil {
		return
	}
	if _, err := f.Write(cgroup); err != nil {
		_ = f.Close()
		_ = host.Remove(name)
		return
	}
	_ = f.Close()
}

// appendLog adds a line to receive.log, which nobody else can write (its
// directory is verified); past maxLogBytes it starts afresh.
func appendLog(inst *hostdir.Dir, line string) {
	f, err := inst.OpenOwn(LogName, unix.O_WRONLY|unix.O_APPEND)
	if err == nil {
		if st, serr := f.Stat(); serr != nil || st.Size() > maxLogBytes {
			_ = f.Close()
			f, err = nil, errors.New("full")
		}
	}
	if err != nil {
		if f, err = inst.Replace(LogName, 0o600); err != nil {
			return
		}
	}
	defer f.Close()
	_, _ = fmt.Fprintf(f, "%s %s\n", time.Now().UTC().Format(time.RFC3339), line)
}

func slotName(i int) string { return slotPrefix + strconv.Itoa(i) }

// budget is a receiver's share of the node-wide bound: one of the slot files
// held with an exclusive flock, holding the bytes this receiver has reserved.
// Reservations are made under a flock of the install directory, so that
// together they never pass the limit.
type budget struct {
	dir   *hostdir.Dir
	slots []*os.File
	mine  int
	limit int64
	held  int64
}

// acquire takes a free slot of n, or returns ErrBusy.
func acquire(dir *hostdir.Dir, n int, limit int64) (*budget, error) {
	b := &budget{dir: dir, limit: limit, mine: -1}
	slots, err := openSlots(dir, n)
	if err != nil {
		return nil, err
	}
	b.slots = slots
	unlock, err := lockDir(dir)
	if err != nil {
		b.close()
		return nil, err
	}
	defer unlock()
	for i, f := range b.slots {
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			// A holder that died left its count behind; it is ours now.
			if err := writeCount(f, 0); err != nil {
				b.close()
				return nil, err
			}
			b.mine = i
			return b, nil
		}
	}
	b.close()
	return nil, fmt.Errorf("%w (%d)", ErrBusy, n)
}

func openSlots(dir *hostdir.Dir, n int) ([]*os.File, error) {
	slots := make([]*os.File, 0, n)
	for i := range n {
		f, err := dir.OpenOwn(slotName(i), unix.O_RDWR)
		if err != nil {
			for _, s := range slots {
				_ = s.Close()
			}
			return nil, fmt.Errorf("receiver slot: %w", err)
		}
		slots = append(slots, f)
	}
	return slots, nil
}

func lockDir(dir *hostdir.Dir) (unlock func(), err error) {
	if err := unix.Flock(dir.Fd(), unix.LOCK_EX); err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir.Path(), err)
	}
	return func() { _ = unix.Flock(dir.Fd(), unix.LOCK_UN) }, nil
}

// reserve grants up to want more bytes, as many as the limit leaves.
func (b *budget) reserve(want int64) (int64, error) {
	if b.limit <= 0 {
		return want, nil
	}
	unlock, err := lockDir(b.dir)
	if err != nil {
		return 0, err
	}
	defer unlock()
	others := liveCount(b.slots, b.mine)
	grant := max(min(want, b.limit-others-b.held), 0)
	if grant > 0 {
		if err := writeCount(b.slots[b.mine], b.held+grant); err != nil {
			return 0, err
		}
		b.held += grant
	}
	return grant, nil
}

// liveCount sums the counts of the slots held by running receivers, but
// skip. The directory lock must be held: a slot that can be locked has no
// holder, and its count is stale.
func liveCount(slots []*os.File, skip int) int64 {
	var sum int64
	for j, f := range slots {
		if j == skip {
			continue
		}
		c := readCount(f)
		if c <= 0 {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			_ = writeCount(f, 0)
			_ = unix.Flock(int(f.Fd()), unix.LOCK_UN)
			continue
		}
		sum += c
	}
	return sum
}

func (b *budget) release() {
	if unlock, err := lockDir(b.dir); err == nil {
		_ = writeCount(b.slots[b.mine], 0)
		unlock()
	}
	b.close()
}

func (b *budget) close() {
	for _, f := range b.slots {
		_ = f.Close() // closing drops the flock
	}
}

func readCount(f *os.File) int64 {
	var buf [8]byte
	if n, err := f.ReadAt(buf[:], 0); n != len(buf) || err != nil {
		return 0
	}
	return int64(binary.LittleEndian.Uint64(buf[:]))
}

func writeCount(f *os.File, c int64) error {
	var buf [8]byte
	binary.LittleEndian.PutUint64(buf[:], uint64(c))
	_, err := f.WriteAt(buf[:], 0)
	return err
}

// InFlight is how many bytes the receivers running on the node have
// reserved for the cores they are writing, read from the slots of the
// install directory under dir; n is the configured MaxReceivers. The agent's
// disk guard counts them with the cores it admitted.
func InFlight(dir string, n int) (int64, error) {
	if n <= 0 {
		n = DefaultMaxReceivers
	}
	inst, err := hostdir.Open(filepath.Join(dir, InstallDir))
	if err != nil {
		return 0, err
	}
	defer inst.Close()
	slots, err := openSlots(inst, min(n, maxSlots))
	if err != nil {
		return 0, err
	}
	defer func() {
		for _, f := range slots {
			_ = f.Close()
		}
	}()
	unlock, err := lockDir(inst)
	if err != nil {
		return 0, err
	}
	defer unlock()
	return liveCount(slots, -1), nil
}
