package wire

// Modules of a dump: GET DumpsPath + name + ModulesSuffix answers the JSON
// list of the modules the dump's process had mapped ([]Module), and GET
// BuildIDPath + id answers the file the agent collected for a build-id, as
// it is (application/octet-stream, with Content-Length). The agent serves a
// build-id only while a dump it serves lists it as collected.
const (
	ModulesSuffix = "/modules"
	BuildIDPath   = "/v1/buildid/"
	// MaxModuleBytes is the largest module file an agent collects and the
	// manager accepts.
	MaxModuleBytes = 512 << 20
	// MaxModuleListBytes bounds the JSON list of a dump's modules.
	MaxModuleListBytes = 2 << 20
)

// Module is one module of a dump as the agent reports it. Everything in it
// comes from the core and the node: the manager bounds and escapes it.
type Module struct {
	Path    string `json:"path"`
	BuildID string `json:"buildID,omitempty"`
	Start   uint64 `json:"start"`
	End     uint64 `json:"end"`
	// Collected: the agent holds the file for BuildID.
	Collected bool `json:"collected,omitempty"`
	// Reason says why a module is not collected.
	Reason ModuleReason `json:"reason,omitempty"`
}

// ModuleReason says why a module's file was not collected. It travels as a
// code; the manager writes its own Message for it, never the agent's words.
type ModuleReason string

// Reasons a module is not collected.
const (
	// ModuleNoBuildID: the core does not hold the module's build-id (its
	// first page was not dumped, or it has none).
	ModuleNoBuildID ModuleReason = "NoBuildID"
	// ModuleNotCollected: the capture mode does not collect files
	// (Observe and Manage), or collecting was not attempted.
	ModuleNotCollected ModuleReason = "NotCollected"
	// ModuleProcessGone: the process's mappings could not be opened.
	ModuleProcessGone ModuleReason = "ProcessGone"
	// ModuleTooLarge: the file is larger than MaxModuleBytes.
	ModuleTooLarge ModuleReason = "TooLarge"
	// ModuleNodeLimit: the node's bounds on collected files (count, bytes,
	// free space) left no room for it.
	ModuleNodeLimit ModuleReason = "NodeLimit"
	// ModuleMismatch: the mapped file's build-id is not the one the core
	// names, or the file has none: it is refused.
	ModuleMismatch ModuleReason = "Mismatch"
	// ModuleUnreadable: reading or copying the file failed.
	ModuleUnreadable ModuleReason = "Unreadable"
	// ModuleTooMany: past the bound on collected modules per dump.
	ModuleTooMany ModuleReason = "TooMany"
)

// Message is the manager's sentence for a reason; an unknown code gets a
// sentence of its own, not the code.
func (r ModuleReason) Message() string {
	switch r {
	case ModuleNoBuildID:
		return "the core does not hold the module's build-id"
	case ModuleNotCollected:
		return "not collected: only Pipe mode collects files while the process is held"
	case ModuleProcessGone:
		return "the process's mappings could not be opened while it was held"
	case ModuleTooLarge:
		return "the file is larger than the agent collects"
	case ModuleNodeLimit:
		return "the node's limits on collected files left no room for it"
	case ModuleMismatch:
		return "the mapped file's build-id is not the one the core names; refused"
	case ModuleUnreadable:
		return "the file could not be read"
	case ModuleTooMany:
		return "past the bound on collected modules per dump"
	}
	return "the agent gave no known reason"
}
