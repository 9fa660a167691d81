package serve

import (
	"sync"

	"github.com/coredog/coredog/internal/wire"
)

// Entry is one file the agent found and is willing to serve.
type Entry struct {
	// Name is the CoreDump name, the last element of the download URL.
	Name string
	// Path is the absolute path of the file on the node.
	Path string
	// Device and Inode identify the file as registered; a file found at
	// Path later with another identity is a different file and is not served.
	Device, Inode uint64
	// Size is the size when registered. The download streams what is there
	// and reports the real size in a trailer; the controller compares.
	Size int64
	// ModTimeNanos and CtimeNanos are the file's times when registered. The
	// server does not look at them: the agent does, before it deletes the
	// file, so that it never deletes one that changed after it was captured.
	ModTimeNanos, CtimeNanos int64
	// CommandLine is the crashed process's arguments as the core's notes
	// give them, sent to the controller in wire.CommandLineHeader (never
	// into the CoreDump, which every agent may read).
	CommandLine string
	// Modules are the modules of the crashed process, with whether the
	// agent collected each one's file; GET .../modules answers them, and
	// GET BuildIDPath serves a build-id only while an entry lists it as
	// collected.
	Modules []wire.Module
	// Analysis is the JSON of the backtraces computed at capture
	// (wire.Analysis), at most wire.MaxAnalysisBytes, served at
	// wire.DumpsPath + Name + wire.AnalysisSuffix; nil when there is none.
	Analysis []byte
}

// Registry holds the files the agent registered itself; only these are ever
// served. It is safe for concurrent use.
type Registry struct {
	mu      sync.RWMutex
	entries map[string]Entry
}

// NewRegistry returns an empty Registry.
func NewRegistry() *Registry {
	return &Registry{entries: make(map[string]Entry)}
}

// Add registers e under e.Name, replacing any entry of that name. An entry
// whose name is not a wire.ValidName can never be requested.
func (r *Registry) Add(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.entries[e.Name] = e
}

// Remove forgets name. Downloads already running finish: they hold the open file.
func (r *Registry) Remove(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, name)
}

// Get returns the entry registered under name.
func (r *Registry) Get(name string) (Entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.entries[name]
	return e, ok
}

// Collected reports whether a registered entry lists build-id id as
// collected.
func (r *Registry) Collected(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.entries {
		for _, m := range e.Modules {
			if m.Collected && m.BuildID == id {
				return true
			}
		}
	}
	return false
}
