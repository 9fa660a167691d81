package app

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/coredog/coredog/agent/analyze"
	"github.com/coredog/coredog/agent/corefile"
	"github.com/coredog/coredog/agent/modstore"
	"github.com/coredog/coredog/internal/wire"
)

// analyzer unwinds a core's threads with the modules opened where the agent
// can check they are the ones the process ran: through the crashed
// process's /proc entry while it still exists and is still in the same
// container, and for a host process (no container) in the host's root file
// system (/proc/1/root). A container's files are never looked for in the
// host's file system, where a path the container chose could name a host
// file. nil when analysis is off.
func (a *Agent) analyzer(hostPID int64, containerID string) func(io.ReaderAt, int64) *wire.Analysis {
	if a.cfg.DisableAnalysis {
		return nil
	}
	var o analyze.HostRoot
	if a.cfg.ProcRoot != "" && hostPID > 0 && a.sameContainer(hostPID, containerID) {
		o.ProcRoot, o.PID = a.cfg.ProcRoot, hostPID
		if containerID != "" {
			o.Root = filepath.Join(a.cfg.ProcRoot, strconv.FormatInt(hostPID, 10), "root")
		}
	}
	if containerID == "" {
		switch {
		case a.cfg.HostRoot != "":
			o.Root = a.cfg.HostRoot
		case a.cfg.ProcRoot != "":
			o.Root = filepath.Join(a.cfg.ProcRoot, "1", "root")
		}
	}
	var opener analyze.Opener = o
	if a.modules != nil {
		// Pipe mode: the receiver kept the process's files while the
		// kernel held it; the process is gone by now.
		opener = collectedFirst{store: a.modules, next: o}
	}
	return func(r io.ReaderAt, size int64) *wire.Analysis {
		res := analyze.Analyze(r, size, opener)
		res.Sanitize()
		return res
	}
}

// collectedFirst opens a module from the files the receiver collected by
// build-id (agent/modstore: root-owned, checked against the core's build-id
// when they were kept), and from next when it has none.
type collectedFirst struct {
	store *modstore.Store
	next  analyze.Opener
}

func (c collectedFirst) Open(ref analyze.ModuleRef) (analyze.Module, error) {
	if ref.BuildID != "" {
		if f, err := c.store.Open(ref.BuildID); err == nil {
			if st, err := f.Stat(); err == nil {
				return collectedModule{File: f, size: st.Size()}, nil
			}
			f.Close()
		}
	}
	return c.next.Open(ref)
}

// collectedModule is a collected file with its size.
type collectedModule struct {
	*os.File
	size int64
}

func (m collectedModule) Size() int64 { return m.size }

// sameContainer reports whether host PID pid is (still) in the container the
// dump was attributed to; for a host process, whether it is in none.
func (a *Agent) sameContainer(pid int64, containerID string) bool {
	data, err := readBounded(filepath.Join(a.cfg.ProcRoot, strconv.FormatInt(pid, 10), "cgroup"), maxCgroupBytes)
	if err != nil {
		return false
	}
	return containerIDOf(data) == containerID
}

// encodeAnalysis is what the agent serves for a dump: the analysis as JSON,
// dropping threads from the end until it fits wire.MaxAnalysisBytes.
func encodeAnalysis(an *wire.Analysis) []byte {
	if an == nil {
		return nil
	}
	c := *an
	for {
		b, err := json.Marshal(&c)
		if err != nil {
			return nil
		}
		if len(b) <= wire.MaxAnalysisBytes || len(c.Stacks) <= 1 {
			if len(b) > wire.MaxAnalysisBytes {
				return nil
			}
			return b
		}
		c.Stacks = c.Stacks[:len(c.Stacks)/2]
	}
}

// signature is spec.signature: a hash of the crashing thread's top frames in
// the program's own code when the analysis has them, else of the crash site.
func signature(executable string, signal int, module string, offset uint64, an *wire.Analysis) string {
	if an != nil {
		if s, ok := analyze.Signature(executable, signal, an); ok {
			return s
		}
	}
	return corefile.Signature(executable, signal, module, offset)
}
