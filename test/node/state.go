package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// StateRoot holds everything a run makes on the machine's file system, and
// the record of what it changed (StateFile), so that whoever ends the run
// (the suite, its guardian process, or the next run after a killed one)
// can undo exactly that. Pipe mode needs its hostPath below here: every
// directory on the way is root's and 0755.
const StateRoot = "/var/lib/coredog-node"

// StateFile is the record of the current run.
const StateFile = StateRoot + "/state.json"

// The kernel settings a run may change (Pipe mode, and Observe with the
// suite's own pattern). Both are global to the machine.
const (
	corePatternFile   = "/proc/sys/kernel/core_pattern"
	corePipeLimitFile = "/proc/sys/kernel/core_pipe_limit"
)

// State is what a run changed on the machine outside its own directory.
type State struct {
	// CorePattern and CorePipeLimit are the machine's values when the run
	// began; every end of the run writes them back.
	CorePattern   string `json:"corePattern"`
	CorePipeLimit string `json:"corePipeLimit"`
	// RootCreated says StateRoot did not exist before the run.
	RootCreated bool `json:"rootCreated"`
	// CreatedDirs are host directories the run made (mount points for its
	// tmpfs mounts), removed at the end if empty.
	CreatedDirs []string `json:"createdDirs,omitempty"`
	// CreatedCgroups are cgroup directories the kubelet made that did not
	// exist before; whatever runs in them at the end is killed.
	CreatedCgroups []string `json:"createdCgroups,omitempty"`
	// Procs are the processes the run started (each with its start time,
	// so a reused PID is never signalled).
	Procs []Proc `json:"procs,omitempty"`
	// Owner is the suite's own process: a record whose owner still runs
	// belongs to a run in progress, which the next one must not undo.
	Owner Proc `json:"owner"`
	// HostVeth is the host's end of the link into the node's network
	// namespace.
	HostVeth string `json:"hostVeth,omitempty"`
}

// Proc is a process the run started.
type Proc struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

// save writes the state atomically.
func (s *State) save() error {
	data, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := StateFile + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, StateFile)
}

// loadState reads the record a run left, or nil when there is none.
func loadState() (*State, error) {
	data, err := os.ReadFile(StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile, err)
	}
	return &s, nil
}

// readKernel reads a /proc/sys value without its trailing newline.
func readKernel(path string) (string, error) {
	b, err := os.ReadFile(path)
	return strings.TrimRight(string(b), "\n"), err
}

// CorePattern is the machine's kernel.core_pattern now.
func CorePattern() (string, error) { return readKernel(corePatternFile) }

// CorePipeLimit is the machine's kernel.core_pipe_limit now.
func CorePipeLimit() (string, error) { return readKernel(corePipeLimitFile) }

// SetCorePattern writes kernel.core_pattern. Only the suite's tests call
// it, between Begin and End, which restore the value the run found.
func SetCorePattern(v string) error {
	return os.WriteFile(corePatternFile, []byte(v), 0o644)
}

// ours says whether a core_pattern value is one a run of this suite set:
// a pipe into, or a path under, StateRoot.
func ours(pattern string) bool {
	return strings.HasPrefix(strings.TrimPrefix(pattern, "|"), StateRoot+"/")
}

// Begin undoes whatever a killed earlier run left behind, then records
// the machine's kernel settings as this run's state (the caller adds to
// it as it creates things). log receives one line per repair.
func Begin(log func(string, ...any)) (*State, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the real-node suite runs kubelet and containerd and needs root")
	}
	old, err := loadState()
	if err != nil {
		return nil, err
	}
	if old != nil && old.Owner.PID != 0 && old.Owner.alive() {
		return nil, fmt.Errorf("another run of the suite (pid %d) is in progress: %s is its record", old.Owner.PID, StateFile)
	}
	if old != nil {
		log("A previous run did not finish: undoing what it recorded (%s)", StateFile)
		if err := Cleanup(old, log); err != nil {
			return nil, fmt.Errorf("cleaning up after the previous run: %w", err)
		}
	}
	pattern, err := CorePattern()
	if err != nil {
		return nil, err
	}
	limit, err := CorePipeLimit()
	if err != nil {
		return nil, err
	}
	if ours(pattern) {
		// A run was killed with its record lost: its pattern names a
		// directory of this suite (a receiver that is gone). The kernel's
		// default value stands in for the one that run found.
		log("core_pattern is %q, left by a killed run; setting the kernel's default %q", pattern, "core")
		if err := SetCorePattern("core"); err != nil {
			return nil, err
		}
		pattern = "core"
		if limit != "0" {
			log("core_pipe_limit is %s, left with it; setting the kernel's default 0", limit)
			if err := os.WriteFile(corePipeLimitFile, []byte("0"), 0o644); err != nil {
				return nil, err
			}
			limit = "0"
		}
	}
	s := &State{CorePattern: pattern, CorePipeLimit: limit}
	if st, ok := procStart(os.Getpid()); ok {
		s.Owner = Proc{Name: "suite", PID: os.Getpid(), Start: st}
	}
	if _, err := os.Stat(StateRoot); errors.Is(err, fs.ErrNotExist) {
		s.RootCreated = true
	}
	if err := os.MkdirAll(StateRoot, 0o755); err != nil {
		return nil, err
	}
	// Pipe mode checks that every directory above its hostPath is root's
	// and writable by no one else.
	if err := os.Chmod(StateRoot, 0o755); err != nil {
		return nil, err
	}
	return s, s.save()
}

// RestoreKernel writes back the kernel settings the run found, when they
// differ. It is safe to call any number of times.
func (s *State) RestoreKernel() error {
	var errs []error
	for _, kv := range [][2]string{{corePatternFile, s.CorePattern}, {corePipeLimitFile, s.CorePipeLimit}} {
		now, err := readKernel(kv[0])
		if err == nil && now == kv[1] {
			continue
		}
		if err := os.WriteFile(kv[0], []byte(kv[1]), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s to %q: %w", kv[0], kv[1], err))
		}
	}
	return errors.Join(errs...)
}

// procStart is a process's start time (field 22 of /proc/PID/stat).
func procStart(pid int) (uint64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	return v, err == nil
}

// alive says whether p still runs (the same process, not a reused PID).
func (p Proc) alive() bool {
	st, ok := procStart(p.PID)
	return ok && st == p.Start
}

// cgroupPIDs lists every process in a cgroup directory and below it.
func cgroupPIDs(dir string) []int {
	var pids []int
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil
		}
		for f := range strings.FieldsSeq(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroupTree removes a cgroup directory and those below it, deepest
// first (a cgroup directory can only be removed once it has no children).
func removeCgroupTree(dir string) error {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, path)
		}
		return nil
	})
	slices.Reverse(dirs)
	var last error
	for _, d := range dirs {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			last = fmt.Errorf("removing cgroup %s: %w", d, err)
		}
	}
	return last
}

// Cleanup undoes what a run recorded in s: it kills the run's processes
// and everything in the cgroups its kubelet made (containers, shims),
// removes those cgroups and the host's veth, writes back the kernel
// settings, and removes StateRoot's run directory and the directories the
// run made. The guardian calls it when the suite dies, the next run when
// it finds a record. Each step runs whatever the previous ones did.
func Cleanup(s *State, log func(string, ...any)) error {
	var errs []error
	for _, p := range slices.Backward(s.Procs) {
		if p.alive() {
			_ = syscall.Kill(p.PID, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range s.Procs {
		for p.alive() && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if p.alive() {
			errs = append(errs, fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID))
		}
	}
	for _, cg := range s.CreatedCgroups {
		for time.Now().Before(deadline) {
			pids := cgroupPIDs(cg)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(100 * time.Millisecond)
		}
		var err error
		for time.Now().Before(deadline) {
			if err = removeCgroupTree(cg); err == nil {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	if s.HostVeth != "" {
		if _, err := os.Stat("/sys/class/net/" + s.HostVeth); err == nil {
			if out, err := exec.Command("ip", "link", "del", s.HostVeth).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("ip link del %s: %v: %s", s.HostVeth, err, out))
			}
		}
	}
	if err := s.RestoreKernel(); err != nil {
		errs = append(errs, err)
	}
	if err := removeAllNoMounts(filepath.Join(StateRoot, "run")); err != nil {
		errs = append(errs, err)
	}
	if err := removeAllNoMounts(filepath.Join(StateRoot, "cores")); err != nil {
		errs = append(errs, err)
	}
	if err := removeAllNoMounts(filepath.Join(StateRoot, "observe")); err != nil {
		errs = append(errs, err)
	}
	for _, d := range slices.Backward(s.CreatedDirs) {
		if err := syscall.Rmdir(d); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("removing %s: %w", d, err))
		}
	}
	if len(errs) == 0 {
		if err := os.Remove(StateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
		if s.RootCreated {
			if err := os.Remove(StateRoot); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	} else {
		log("Cleanup left the record %s for the next run: %v", StateFile, errors.Join(errs...))
	}
	return errors.Join(errs...)
}

// removeAllNoMounts removes a directory tree, refusing when anything is
// still mounted below it in this mount namespace (removing through a
// mount would delete what it shows, not the run's files).
func removeAllNoMounts(dir string) error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			return fmt.Errorf("not removing %s: %s is mounted", dir, f[4])
		}
	}
	return os.RemoveAll(dir)
}
