package v1alpha1

// StoredProcessInfo is spec.process as the metadata file stored next to a
// dump (<key>.json) keeps it: with the crashed process's command line, which
// the agent hands the manager with the download. The CoreDump object never
// holds it: arguments can hold secrets (--password=...), and every agent
// token can list and watch every node's CoreDumps.
type StoredProcessInfo struct {
	ProcessInfo `json:",inline"`
	// commandLine as the core's notes give it (NT_PRPSINFO: at most 80
	// bytes), invalid UTF-8 and control characters written as \xNN.
	// +optional
	CommandLine string `json:"commandLine,omitempty"`
}

// StoredCoreDumpSpec is a CoreDump's spec as its stored metadata file keeps
// it (see StoredProcessInfo).
type StoredCoreDumpSpec struct {
	CoreDumpSpec `json:",inline"`
	// process that dumped core, with its command line.
	// +optional
	Process StoredProcessInfo `json:"process"`
}
