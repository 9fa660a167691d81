package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/detect"
	"github.com/coredog/coredog/agent/receive"
	"github.com/coredog/coredog/agent/serve"
	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/agentlease"
	"github.com/coredog/coredog/internal/wire"
)

// DumpName is the CoreDump name of a file: a hash of the node and the file's
// identity, so that an agent that retries or restarts never makes a second
// object for one file, and AlreadyExists means the work is done.
func DumpName(node string, id detect.Identity) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%d\x00%d\x00%d", node, id.Device, id.Inode, id.CtimeNanos, id.Size)
	return dumpNamePrefix + hex.EncodeToString(h.Sum(nil)[:dumpIDBytes])
}

var errHardLink = errors.New("file has more than one hard link")

// maxCgroupBytes bounds what is read from /proc/<pid>/cgroup.
const maxCgroupBytes = 64 << 10

// recordCgroup reads the dumping process's cgroup the moment its file
// appears: by the time the file is complete the process, and with it
// /proc/<pid>/cgroup, is gone.
func (a *Agent) recordCgroup(path string) {
	if a.cfg.ProcRoot == "" || !a.set.pattern.HasHostPID() {
		return
	}
	fields, ok := a.set.pattern.Parse(filepath.Base(path))
	if !ok || fields.HostPID <= 0 {
		return
	}
	data, err := readBounded(filepath.Join(a.cfg.ProcRoot, strconv.FormatInt(fields.HostPID, 10), "cgroup"), maxCgroupBytes)
	if err != nil {
		a.log.V(1).Info("Cannot read the dumping process's cgroup", "path", path, "pid", fields.HostPID, "err", err.Error())
		return
	}
	id := containerIDOf(data)
	if id == "" {
		return
	}
	a.cgMu.Lock()
	defer a.cgMu.Unlock()
	if len(a.cgroups) < 10000 {
		a.cgroups[path] = id
	}
}

func (a *Agent) takeContainerID(path string) string {
	a.cgMu.Lock()
	id := a.cgroups[path]
	delete(a.cgroups, path)
	a.cgMu.Unlock()
	if a.cfg.CorePattern != string(coredogv1.CorePatternPipe) {
		return id
	}
	// In Pipe mode the receiver read the cgroup while the kernel held the
	// process and left it beside the core: that wins over a /proc read
	// made later, when the PID may be another process's.
	if data, err := readSidecar(cgroupSidecar(path)); err == nil {
		if sid := containerIDOf(data); sid != "" {
			return sid
		}
	}
	return id
}

// errNotReceiverFile marks a sidecar the receiver cannot have written.
var errNotReceiverFile = errors.New("not a file the pipe receiver wrote")

// readSidecar reads a cgroup sidecar, at most maxCgroupBytes. Its directory
// is one pods may write into: a symbolic link, a FIFO (which would block
// the capture workers), a hard link or a file that root did not write, or
// that others may write, is not taken.
func readSidecar(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || !fi.Mode().IsRegular() || st.Nlink != 1 || st.Uid != 0 || fi.Mode().Perm()&0o022 != 0 {
		return nil, errNotReceiverFile
	}
	return readAtMost(f, maxCgroupBytes)
}

// cgroupSidecar is where the pipe receiver keeps a core's cgroup.
func cgroupSidecar(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+receive.CgroupSuffix)
}

func containerIDOf(cgroup []byte) string {
	info, ok := corefile.ContainerID(cgroup)
	if !ok {
		return ""
	}
	if info.Runtime != "" {
		return info.Runtime + "://" + info.ID
	}
	return info.ID
}

func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readAtMost(f, limit)
}

// readAtMost is one read of at most limit bytes: cgroup files are read
// whole by the kernel in one call.
func readAtMost(f *os.File, limit int64) ([]byte, error) {
	buf := make([]byte, limit)
	n, err := f.Read(buf)
	if err != nil && n == 0 {
		return nil, err
	}
	return buf[:n], nil
}

// capture turns one complete file into a CoreDump: describe it, admit it
// under the node's disk limits, register it for serving, and create its
// CoreDump (retrying in the background when the API server is away).
func (a *Agent) capture(ctx context.Context, f detect.File) {
	log := a.log.WithValues("file", f.RelPath)
	name := DumpName(a.cfg.NodeName, f.Identity)
	containerID := a.takeContainerID(f.Path)

	fields, _ := a.set.pattern.Parse(filepath.Base(f.Path))
	core, facts, parseErr, analysis, err := describe(f, a.cfg.CorePattern == string(coredogv1.CorePatternPipe), a.analyzer(fields.HostPID, containerID))
	if errors.Is(err, errHardLink) {
		a.metrics.refused.WithLabelValues("HardLink").Inc()
		log.Info("Ignoring a file with more than one hard link: it is not a core the kernel wrote")
		return
	}
	if err != nil {
		// The file changed or vanished between detection and capture: the
		// detector sees whatever is there now as a new file.
		log.Info("File changed before it could be captured", "err", err.Error())
		return
	}
	cd := a.buildCoreDump(name, f, core, parseErr, containerID, facts, analysis)
	if f.Previous != nil {
		// The same crash, grown since it was captured: its CoreDump was
		// paid for.
		a.supersede(cd, *f.Previous)
	} else if !a.withinBudget(f, cd) {
		return
	}
	defer a.creating.Delete(name)
	if f.Cut {
		log.Info("Capturing a core file that is shorter than its headers say: its writer stopped before the end", "size", f.Identity.Size)
	}
	captured := capturedEntry(name, f)

	admitted, reason, err := a.guard.Admit(name, f.Path, f.Identity.Size)
	if err != nil {
		log.Error(err, "Checking the node's disk limits; keeping the file")
		admitted = true
	}
	if !admitted {
		// Node safety comes first: the file goes now, and its CoreDump
		// records why, whenever the API server takes it.
		cd.Spec.RefusedReason = coredogv1.ReasonQuotaExceeded
		a.metrics.refused.WithLabelValues(coredogv1.ReasonQuotaExceeded).Inc()
		log.Info("Refusing core file: node disk limit", "reason", reason, "name", name)
		a.dropFile(f, captured, "refused")
	} else {
		if core != nil {
			// The arguments go to the manager with the download, never into
			// the CoreDump: every agent token may read every CoreDump.
			captured.CommandLine = core.CommandLine
		}
		captured.Modules = a.modulesOf(f, core)
		captured.Analysis = encodeAnalysis(analysis)
		a.registry.Add(captured)
		a.metrics.localBytes.Set(float64(a.guard.Usage()))
	}
	if err := a.createCoreDump(ctx, cd); err != nil {
		log.Info("Cannot create the CoreDump yet; retrying in the background", "name", name, "err", err.Error())
		a.pending.add(cd)
		return
	}
	a.metrics.detectLatency.Observe(time.Since(f.ModTime).Seconds())
}

// supersede records on cd that it replaces the dump made for an earlier
// version of its file, and lets go of that one: the file is this dump's now,
// counted and served under its name alone. A dump of the earlier version
// that the API server never took is dropped and not named.
func (a *Agent) supersede(cd *coredogv1.CoreDump, previous detect.Identity) {
	old := DumpName(a.cfg.NodeName, previous)
	if old == cd.Name {
		return
	}
	if _, registered := a.registry.Get(old); registered {
		a.registry.Remove(old)
		a.guard.Forget(old)
	}
	if a.pending.remove(old) {
		a.log.Info("Dropping the CoreDump not yet created for an earlier version of a core file", "name", old, "file", cd.Spec.FileName)
		return
	}
	cd.Spec.Supersedes = old
	a.log.Info("Core file changed after it was captured; capturing it again", "name", cd.Name, "supersedes", old, "file", cd.Spec.FileName)
}

// declaredSize is detect.Options.DeclaredSize: the size the core at path
// says it will have, from its ELF and program headers. It opens the file as
// describe does, and says nothing of a file that is not a regular file with
// one link.
func declaredSize(path string) (int64, bool) {
	file, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return 0, false
	}
	defer file.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(file.Fd()), &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Nlink != 1 {
		return 0, false
	}
	return corefile.DeclaredSize(file, st.Size)
}

// capturedEntry is the file f as it was when it was judged complete.
func capturedEntry(name string, f detect.File) serve.Entry {
	return serve.Entry{Name: name, Path: f.Path, Device: f.Identity.Device, Inode: f.Identity.Inode, Size: f.Identity.Size,
		ModTimeNanos: f.ModTime.UnixNano(), CtimeNanos: f.Identity.CtimeNanos}
}

// dropFile removes a core file the agent does not keep (why: refused,
// counted), with its sidecar, unless it changed since it was captured: a
// file still being written is kept, the detector emits it again when it is
// still, and it is judged afresh then. It reports whether the file is gone.
func (a *Agent) dropFile(f detect.File, captured serve.Entry, why string) bool {
	switch err := removeIfUnchanged(f.Path, captured); {
	case errors.Is(err, errChanged):
		a.log.Info("Keeping a "+why+" core file that changed after it was captured", "file", f.RelPath, "err", err.Error())
		return false
	case err != nil && !errors.Is(err, os.ErrNotExist):
		a.log.Error(err, "Removing a "+why+" core file", "file", f.RelPath)
	}
	_ = os.Remove(cgroupSidecar(f.Path))
	a.releaseModules(f.Path)
	a.detector.Forget(f.Path)
	return true
}

// withinBudget draws on the creation budget for a file that has no CoreDump
// yet. Past the budget the crash is counted on an existing CoreDump of this
// agent's and the file is removed: a crash loop costs the API server one
// write a second, not one object per crash, and the node no disk.
func (a *Agent) withinBudget(f detect.File, cd *coredogv1.CoreDump) bool {
	if a.dumps != nil && a.dumps.has(cd.Name) {
		// Found again after a restart: its CoreDump was paid for.
		return true
	}
	key := coredogv1.BudgetKey(cd.Spec.PolicyName, cd.Spec.NodeWorkload(), cd.Spec.Signature)
	a.budgetMu.Lock()
	d := a.budget.Decide(key, cd.Name, time.Now())
	if d.Create {
		a.creating.Store(cd.Name, struct{}{})
	}
	a.budgetMu.Unlock()
	if d.Create {
		return true
	}
	if !a.dropFile(f, capturedEntry(cd.Name, f), "counted") {
		// Still being written: it is counted when it is judged again.
		return false
	}
	a.series.add(d.Target, d.Other, cd.CrashTime())
	a.metrics.counted.Inc()
	a.log.V(1).Info("Counted a crash on an existing CoreDump: the creation budget is spent", "file", f.RelPath, "on", d.Target, "otherSignature", d.Other)
	return false
}

// budgetGone and budgetLatest are the series writer's view of the budget.
func (a *Agent) budgetGone(name string) {
	a.budgetMu.Lock()
	defer a.budgetMu.Unlock()
	a.budget.Gone(name)
}

func (a *Agent) budgetLatest() string {
	a.budgetMu.Lock()
	defer a.budgetMu.Unlock()
	return a.budget.Latest()
}

// isCreating reports whether a CoreDump's create is under way or queued.
func (a *Agent) isCreating(name string) bool {
	_, ok := a.creating.Load(name)
	return ok || a.pending.has(name)
}

// fileFacts is what the file says about the dump besides its contents.
type fileFacts struct {
	// owner is the file's owner: the kernel writes a core as the dumping
	// process's fsuid, or as root for a dump only fs.suid_dumpable=2 allows.
	owner uint32
	// dumpMode is the kernel's %d (1 or 2), from the name or, in Pipe mode,
	// from the receiver's receive.DumpModeXattr; 0 when neither gives it.
	dumpMode int
	// pipe: the receiver wrote the file, as root, whoever crashed.
	pipe bool
}

// describe reads the file's ELF notes. err is set when the file is no longer
// the one detected; parseErr when it is, but could not be fully read.
// describe reads the file's ELF notes, and with analyzer (when not nil) the
// backtraces of its threads. err is set when the file is no longer the one
// detected; parseErr when it is, but could not be fully read.
func describe(f detect.File, pipe bool, analyzer func(io.ReaderAt, int64) *wire.Analysis) (
	core *corefile.Core, facts fileFacts, parseErr error, analysis *wire.Analysis, err error) {
	file, err := os.OpenFile(f.Path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, facts, nil, nil, err
	}
	defer file.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(file.Fd()), &st); err != nil {
		return nil, facts, nil, nil, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Dev != f.Identity.Device || st.Ino != f.Identity.Inode {
		return nil, facts, nil, nil, errors.New("not the file that was detected")
	}
	if st.Nlink != 1 {
		// The kernel writes a core with one link. More mean a hard link,
		// possibly to a file outside the directory (/etc/shadow): never
		// describe, serve or upload it.
		return nil, facts, nil, nil, errHardLink
	}
	facts = fileFacts{owner: st.Uid, pipe: pipe}
	if pipe {
		facts.dumpMode = dumpModeXattr(int(file.Fd()))
	}
	core, parseErr = corefile.ReadCore(file, st.Size)
	if analyzer != nil {
		analysis = analyzer(file, st.Size)
	}
	return core, facts, parseErr, analysis, nil
}

// dumpModeXattr reads the dump mode the pipe receiver left on the file: a
// trusted.* attribute, which only a process with CAP_SYS_ADMIN can set.
func dumpModeXattr(fd int) int {
	buf := make([]byte, 4)
	n, err := unix.Fgetxattr(fd, receive.DumpModeXattr, buf)
	if err != nil || n != 1 || buf[0] < '1' || buf[0] > '2' {
		return 0
	}
	return int(buf[0] - '0')
}

// dumpModeOf decides spec.process.dumpMode. The kernel's %d says it, when
// the name or the receiver gives it. Otherwise a file the kernel wrote
// itself (Observe, Manage) says it by its owner: the kernel writes a core
// as the process's fsuid, and as root when it dumps a process only because
// fs.suid_dumpable=2 (a setuid program, one that changed credentials or
// made itself non-dumpable). A root-owned core of a process whose real uid
// is not root is such a dump; one owned by that uid is an ordinary dump. In
// Pipe mode the receiver owns every file, which says nothing.
func dumpModeOf(f fileFacts, uid *int64) coredogv1.DumpMode {
	switch f.dumpMode {
	case 1:
		return coredogv1.DumpModeUser
	case 2:
		return coredogv1.DumpModePrivileged
	}
	switch {
	case f.pipe || uid == nil:
		return ""
	case f.owner == 0 && *uid != 0:
		return coredogv1.DumpModePrivileged
	case int64(f.owner) == *uid:
		return coredogv1.DumpModeUser
	}
	return ""
}

func (a *Agent) buildCoreDump(name string, f detect.File, core *corefile.Core, parseErr error, containerID string, facts fileFacts, analysis *wire.Analysis) *coredogv1.CoreDump {
	fields, _ := a.set.pattern.Parse(filepath.Base(f.Path))
	if facts.dumpMode == 0 {
		facts.dumpMode = fields.DumpMode
	}
	p := coredogv1.ProcessInfo{
		Executable: fields.Executable,
		PID:        fields.PID,
		HostPID:    fields.HostPID,
		Hostname:   fields.Hostname,
		UID:        fields.UID,
		GID:        fields.GID,
		Signal:     int32(fields.Signal),
	}
	var elfInfo *coredogv1.ELFInfo
	var module string
	var offset uint64
	if core != nil {
		if core.Executable != "" {
			p.Executable = core.Executable
		}
		if core.PID > 0 {
			p.PID = core.PID
		}
		if core.Signal > 0 {
			p.Signal = int32(core.Signal)
		}
		if p.UID == nil {
			p.UID = core.UID
		}
		if p.GID == nil {
			p.GID = core.GID
		}
		elfInfo = &coredogv1.ELFInfo{
			Machine:     core.Machine,
			Threads:     int32(core.Threads),
			CrashModule: core.CrashModule,
			BuildID:     core.BuildID,
			Truncated:   core.Truncated,
		}
		if core.HasFaultAddress {
			elfInfo.FaultAddress = "0x" + strconv.FormatUint(core.FaultAddress, 16)
		}
		if core.CrashModule != "" {
			elfInfo.CrashOffset = "0x" + strconv.FormatUint(core.CrashOffset, 16)
			module, offset = core.CrashModule, core.CrashOffset
		}
	}
	p.Executable = clip(escapeName(p.Executable), 4096)
	p.Hostname = clip(escapeName(p.Hostname), 253)
	if p.Signal < 0 || p.Signal > 128 {
		p.Signal = 0
	}
	p.SignalName = coredogv1.SignalNameOf(int(p.Signal))
	p.DumpMode = dumpModeOf(facts, p.UID)
	dumped := f.ModTime
	if !fields.Time.IsZero() {
		dumped = fields.Time
	}
	p.DumpedAt = &metav1.Time{Time: dumped}

	spec := coredogv1.CoreDumpSpec{
		PolicyName:   a.cfg.Policy,
		NodeName:     a.cfg.NodeName,
		FileName:     clip(escapeName(f.RelPath), 4096),
		FileIdentity: &coredogv1.FileIdentity{Device: f.Identity.Device, Inode: f.Identity.Inode, CtimeNanos: f.Identity.CtimeNanos},
		Size:         f.Identity.Size,
		DisplaySize:  coredogv1.DisplaySize(f.Identity.Size),
		DetectedAt:   metav1.NewTime(f.SeenAt),
		DetectedBy:   coredogv1.DetectionSource(f.Source),
		Process:      p,
		ContainerID:  clip(containerID, 256),
		ELF:          elfInfo,
		Signature:    signature(p.Executable, int(p.Signal), module, offset, analysis),
	}
	if parseErr != nil {
		spec.ParseError = clip(parseErr.Error(), 1024)
	}
	return &coredogv1.CoreDump{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: a.cfg.Namespace,
			Labels: map[string]string{
				coredogv1.LabelNode:   coredogv1.LabelValue(a.cfg.NodeName),
				coredogv1.LabelPolicy: coredogv1.LabelValue(a.cfg.Policy),
			},
		},
		Spec: spec,
	}
}

// createCoreDump creates cd; AlreadyExists is success (the name is the
// file's identity), and when that CoreDump is already done with, the local
// file is released at once.
func (a *Agent) createCoreDump(ctx context.Context, cd *coredogv1.CoreDump) error {
	err := a.client.createDump(ctx, cd)
	if err == nil {
		a.log.Info("Captured core dump", "name", cd.Name, "file", cd.Spec.FileName, "size", cd.Spec.Size,
			"executable", cd.Spec.Process.Executable, "signal", cd.Spec.Process.SignalName)
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		a.metrics.createErrors.Inc()
		return fmt.Errorf("creating CoreDump %s: %w", cd.Name, err)
	}
	existing, err := a.client.getDump(ctx, cd.Namespace, cd.Name)
	if err != nil {
		return fmt.Errorf("reading CoreDump %s: %w", cd.Name, err)
	}
	a.log.V(1).Info("CoreDump exists already", "name", cd.Name, "phase", existing.Status.Phase)
	if done(existing) {
		a.release(cd.Name, "its CoreDump is "+string(existing.Status.Phase))
	}
	return nil
}

// escapeName keeps valid UTF-8 as it is and writes other bytes as \xNN, so
// that any name the kernel wrote can be shown and stored.
func escapeName(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && size == 1) || r == 0 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

func endpointURL(host string, port int) string { return agentlease.Endpoint(host, port) }
