package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// DetectionSource says how an agent first noticed a file.
// +kubebuilder:validation:Enum=Watch;Poll;Rescan
type DetectionSource string

const (
	// DetectedByWatch: an fsnotify event.
	DetectedByWatch DetectionSource = "Watch"
	// DetectedByPoll: the periodic polling fallback.
	DetectedByPoll DetectionSource = "Poll"
	// DetectedByRescan: a full rescan (at start, or after a lost event).
	DetectedByRescan DetectionSource = "Rescan"
)

// Phase is where a CoreDump is in its life.
// +kubebuilder:validation:Enum=Pending;Uploading;Uploaded;Skipped;Failed
type Phase string

const (
	// PhasePending: captured, not yet handled by the controller.
	PhasePending Phase = "Pending"
	// PhaseUploading: the controller is streaming the dump into storage.
	PhaseUploading Phase = "Uploading"
	// PhaseUploaded: the dump is in storage; the node's copy can go.
	PhaseUploaded Phase = "Uploaded"
	// PhaseSkipped: the dump is not stored (see status.reason); the node's copy can go.
	PhaseSkipped Phase = "Skipped"
	// PhaseFailed: the upload failed for good.
	PhaseFailed Phase = "Failed"
)

// ResolvedBy says how the owning pod was found.
// +kubebuilder:validation:Enum=ContainerID;Hostname;Termination;Unresolved
type ResolvedBy string

const (
	// ResolvedByContainerID: the container ID read from the process's cgroup.
	ResolvedByContainerID ResolvedBy = "ContainerID"
	// ResolvedByHostname: the only pod on the node with that hostname.
	ResolvedByHostname ResolvedBy = "Hostname"
	// ResolvedByTermination: among pods with that hostname, the one whose
	// container terminated with the crash's signal near the dump time.
	ResolvedByTermination ResolvedBy = "Termination"
	// ResolvedByUnresolved: no pod, or more than one candidate; never a guess.
	ResolvedByUnresolved ResolvedBy = "Unresolved"
)

// FileIdentity identifies a file on its node across agent restarts.
type FileIdentity struct {
	// device number of the filesystem.
	Device uint64 `json:"device"`
	// inode number.
	Inode uint64 `json:"inode"`
	// ctimeNanos is the inode change time, in nanoseconds since the epoch.
	CtimeNanos int64 `json:"ctimeNanos"`
}

// ProcessInfo describes the process that dumped core.
type ProcessInfo struct {
	// executable name (the kernel's comm or the main program's file name).
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	Executable string `json:"executable,omitempty"`
	// pid in the process's own PID namespace.
	// +optional
	// +kubebuilder:validation:Minimum=0
	PID int64 `json:"pid,omitempty"`
	// hostPID is the pid in the node's PID namespace.
	// +optional
	// +kubebuilder:validation:Minimum=0
	HostPID int64 `json:"hostPID,omitempty"`
	// hostname of the process (the pod's hostname in a pod).
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Hostname string `json:"hostname,omitempty"`
	// uid of the process.
	// +optional
	UID *int64 `json:"uid,omitempty"`
	// gid of the process.
	// +optional
	GID *int64 `json:"gid,omitempty"`
	// signal number that killed the process.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	Signal int32 `json:"signal,omitempty"`
	// signalName, e.g. SIGSEGV.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	SignalName string `json:"signalName,omitempty"`
	// dumpedAt is the time of the dump, from the file name (%t) when present.
	// +optional
	DumpedAt *metav1.Time `json:"dumpedAt,omitempty"`
	// dumpMode is Privileged when the kernel dumped a process that had
	// changed credentials or was made non-dumpable (a setuid program, a
	// daemon that dropped root) because fs.suid_dumpable is 2, and User for
	// an ordinary dump; absent when the agent could not tell.
	// +optional
	DumpMode DumpMode `json:"dumpMode,omitempty"`
}

// DumpMode says with whose rights the kernel dumped a process: the core
// pattern's %d (the process's dumpable flag, as prctl PR_GET_DUMPABLE gives it).
// +kubebuilder:validation:Enum=User;Privileged
type DumpMode string

const (
	// DumpModeUser (%d = 1): an ordinary dump, written as the process's own user.
	DumpModeUser DumpMode = "User"
	// DumpModePrivileged (%d = 2): the process was not dumpable (setuid or
	// setgid, changed credentials, PR_SET_DUMPABLE 0) and fs.suid_dumpable
	// = 2 made the kernel dump it all the same, as root. Its memory may hold
	// what only root may read (/etc/shadow, host keys), whatever its uid says.
	DumpModePrivileged DumpMode = "Privileged"
)

// ELFInfo is what the core's ELF notes say about the crash.
type ELFInfo struct {
	// machine, e.g. x86_64 or aarch64.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Machine string `json:"machine,omitempty"`
	// threads in the process.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Threads int32 `json:"threads,omitempty"`
	// faultAddress is the faulting address, hexadecimal (0x...).
	// +optional
	// +kubebuilder:validation:MaxLength=18
	FaultAddress string `json:"faultAddress,omitempty"`
	// crashModule is the file that holds the faulting instruction.
	// +optional
	// +kubebuilder:validation:MaxLength=4096
	CrashModule string `json:"crashModule,omitempty"`
	// crashOffset is the faulting instruction's offset in crashModule, hexadecimal.
	// +optional
	// +kubebuilder:validation:MaxLength=18
	CrashOffset string `json:"crashOffset,omitempty"`
	// buildID is the GNU build-id of crashModule, hexadecimal.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	BuildID string `json:"buildID,omitempty"`
	// truncated: the file is shorter than its program headers claim.
	// +optional
	Truncated bool `json:"truncated,omitempty"`
}

// CoreDumpSpec holds the facts an agent found on the node. It is written once.
// MaxDumpSize bounds spec.size (16 TiB): an agent writes the size, and the
// manager must not size anything by a number no core can have.
const MaxDumpSize = 16 << 40

type CoreDumpSpec struct {
	// policyName is the CoreDumpPolicy whose agent captured the dump.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	PolicyName string `json:"policyName"`
	// nodeName is the node the dump is on.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	NodeName string `json:"nodeName"`
	// fileName is the file's path relative to the policy's hostPath. It may hold
	// any bytes the kernel wrote except NUL; invalid UTF-8 is escaped.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=4096
	FileName string `json:"fileName"`
	// fileIdentity is the file's device, inode and ctime.
	// +optional
	FileIdentity *FileIdentity `json:"fileIdentity,omitempty"`
	// size of the file in bytes, at most MaxDumpSize.
	// +required
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=17592186044416
	Size int64 `json:"size"`
	// displaySize is size for people, e.g. 41Mi.
	// +optional
	// +kubebuilder:validation:MaxLength=16
	DisplaySize string `json:"displaySize,omitempty"`
	// detectedAt is when the agent first saw the file.
	// +required
	DetectedAt metav1.Time `json:"detectedAt"`
	// detectedBy is how the agent first saw the file.
	// +required
	DetectedBy DetectionSource `json:"detectedBy"`
	// process that dumped core.
	// +optional
	Process ProcessInfo `json:"process,omitempty"`
	// containerID of the crashed process, runtime-prefixed (containerd://...),
	// when the agent could read it from the process's cgroup.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	ContainerID string `json:"containerID,omitempty"`
	// elf is what the core's notes say; absent when the file is not an ELF core.
	// +optional
	ELF *ELFInfo `json:"elf,omitempty"`
	// signature is a short hash of executable, signal, crash module and offset.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Signature string `json:"signature,omitempty"`
	// parseError says why the file could not be fully described (not an ELF
	// core, corrupt notes); the dump is kept all the same.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	ParseError string `json:"parseError,omitempty"`
	// refusedReason is set when the agent did not keep the file (QuotaExceeded).
	// +optional
	// +kubebuilder:validation:Enum=QuotaExceeded
	RefusedReason string `json:"refusedReason,omitempty"`
	// supersedes names the CoreDump this agent made earlier for the same file
	// (same node, path and inode) before it changed: the file grew or was
	// rewritten after it was captured, so that dump holds an earlier,
	// shorter version, and this one holds the file as it is now. The agent
	// does not delete a file that changed after it was captured. It is a
	// claim of the agent's, for people and tools; nothing acts on it.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	Supersedes string `json:"supersedes,omitempty"`
}

// PodReference describes the pod that owned the crashed process.
type PodReference struct {
	// namespace of the pod.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// name of the pod.
	// +optional
	Name string `json:"name,omitempty"`
	// uid of the pod.
	// +optional
	UID string `json:"uid,omitempty"`
	// container that crashed.
	// +optional
	Container string `json:"container,omitempty"`
	// image of that container.
	// +optional
	Image string `json:"image,omitempty"`
	// imageID of that container.
	// +optional
	ImageID string `json:"imageID,omitempty"`
	// workloadKind: Deployment, StatefulSet, DaemonSet, Job, CronJob or Pod.
	// +optional
	WorkloadKind string `json:"workloadKind,omitempty"`
	// workloadName is the name of that workload.
	// +optional
	WorkloadName string `json:"workloadName,omitempty"`
	// resolvedBy says how the pod was found.
	// +optional
	ResolvedBy ResolvedBy `json:"resolvedBy,omitempty"`
}

// StorageStatus says where the dump is stored.
type StorageStatus struct {
	// url of the stored object, e.g. s3://bucket/prefix/ns/pod/....zst.
	// +optional
	URL string `json:"url,omitempty"`
	// key of the object in its bucket.
	// +optional
	Key string `json:"key,omitempty"`
	// compression of the stored object.
	// +optional
	Compression Compression `json:"compression,omitempty"`
	// storedSize is the stored object's size in bytes.
	// +optional
	StoredSize int64 `json:"storedSize,omitempty"`
	// sha256 of the uncompressed dump, hexadecimal.
	// +optional
	SHA256 string `json:"sha256,omitempty"`
	// uploadedAt is when the store confirmed the write.
	// +optional
	UploadedAt *metav1.Time `json:"uploadedAt,omitempty"`
}

// CoreDumpStatus is what the controller did with the dump.
type CoreDumpStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// phase: Pending, Uploading, Uploaded, Skipped or Failed.
	// +optional
	Phase Phase `json:"phase,omitempty"`
	// reason is a CamelCase word for the phase (NotSelected, TooLarge, Throttled, QuotaExceeded, ...).
	// +optional
	Reason string `json:"reason,omitempty"`
	// message says what happened, for people.
	// +optional
	Message string `json:"message,omitempty"`
	// pod that owned the crashed process.
	// +optional
	Pod *PodReference `json:"pod,omitempty"`
	// storage says where the dump is stored.
	// +optional
	Storage *StorageStatus `json:"storage,omitempty"`
	// attempts counts upload attempts.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// nextAttemptAt is when the next upload attempt is due, after a failed
	// one (exponential backoff). Kept in the status so that a restarted
	// manager or a new leader keeps the backoff.
	// +optional
	NextAttemptAt *metav1.Time `json:"nextAttemptAt,omitempty"`
	// conditions: PodResolved, Uploaded.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// analysis is what reading the core on its node found: the crashing
	// thread's backtrace and the modules the process had mapped. The agent
	// computes it; the manager checks and bounds it and writes it here.
	// +optional
	Analysis *CrashAnalysis `json:"analysis,omitempty"`
}

// Bounds of CrashAnalysis, shared by the agent (which computes it), the
// manager (which checks what an agent sends) and the CRD.
const (
	// MaxAnalysisFrames bounds status.analysis.frames (the crashing thread).
	MaxAnalysisFrames = 32
	// MaxAnalysisModules bounds status.analysis.modules.
	MaxAnalysisModules = 256
)

// AnalysisOutcome says how far the analysis of a core got.
// +kubebuilder:validation:Enum=Complete;Partial;Unavailable
type AnalysisOutcome string

const (
	// AnalysisComplete: every thread was unwound to its outermost frame.
	AnalysisComplete AnalysisOutcome = "Complete"
	// AnalysisPartial: some frames or modules are missing; reason says why.
	AnalysisPartial AnalysisOutcome = "Partial"
	// AnalysisUnavailable: no backtrace (not an ELF core, an unsupported
	// machine, the analysis was turned off or failed); reason says why.
	AnalysisUnavailable AnalysisOutcome = "Unavailable"
)

// CrashAnalysis is the backtrace of the crashing thread and the modules of
// the process. All threads are in the stored .json, not here.
type CrashAnalysis struct {
	// outcome: Complete, Partial or Unavailable.
	// +required
	Outcome AnalysisOutcome `json:"outcome"`
	// reason says, for Partial and Unavailable, what was missing.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
	// threads is how many threads the core holds.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Threads int32 `json:"threads,omitempty"`
	// crashingThread is the thread ID (TID) of the thread that took the signal.
	// +optional
	// +kubebuilder:validation:Minimum=0
	CrashingThread int32 `json:"crashingThread,omitempty"`
	// frames of the crashing thread, innermost first, at most 32.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=32
	Frames []StackFrame `json:"frames,omitempty"`
	// modules the process had mapped (executable and shared libraries), at
	// most 256, with their build-ids and whether the file itself was kept.
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:MaxItems=256
	Modules []CrashModule `json:"modules,omitempty"`
}

// StackFrame is one frame of a backtrace.
type StackFrame struct {
	// module is the base name of the file that holds pc; empty for code in
	// no file (JIT, anonymous memory).
	// +optional
	// +kubebuilder:validation:MaxLength=255
	Module string `json:"module,omitempty"`
	// buildID is module's GNU build-id, hexadecimal.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	BuildID string `json:"buildID,omitempty"`
	// pc is the frame's program counter, hexadecimal (0x...).
	// +optional
	// +kubebuilder:validation:MaxLength=18
	PC string `json:"pc,omitempty"`
	// offset is pc's offset in module (the address in the module's own
	// address space), hexadecimal.
	// +optional
	// +kubebuilder:validation:MaxLength=18
	Offset string `json:"offset,omitempty"`
	// function is the demangled name of the function, when known.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Function string `json:"function,omitempty"`
	// file is the source file, when the module has line tables.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	File string `json:"file,omitempty"`
	// line in file.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Line int32 `json:"line,omitempty"`
}

// ModuleState says whether a module's file was kept.
// +kubebuilder:validation:Enum=Stored;Collected;Missing
type ModuleState string

const (
	// ModuleStored: the file is in the storage location under its build-id.
	ModuleStored ModuleState = "Stored"
	// ModuleCollected: the agent holds the file; it is not stored yet.
	ModuleCollected ModuleState = "Collected"
	// ModuleMissing: the file could not be collected; reason says why.
	ModuleMissing ModuleState = "Missing"
)

// CrashModule is one file the process had mapped.
type CrashModule struct {
	// path of the file inside the process's mount namespace.
	// +required
	// +kubebuilder:validation:MaxLength=4096
	Path string `json:"path"`
	// buildID is the file's GNU build-id, hexadecimal; empty when the core
	// does not hold it.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	BuildID string `json:"buildID,omitempty"`
	// start and end of the file's mappings, hexadecimal (0x...).
	// +optional
	// +kubebuilder:validation:MaxLength=18
	Start string `json:"start,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxLength=18
	End string `json:"end,omitempty"`
	// state: Stored, Collected or Missing.
	// +optional
	State ModuleState `json:"state,omitempty"`
	// reason says why a Missing module could not be collected.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Reason string `json:"reason,omitempty"`
}

// CoreDumpSeries counts the crashes an agent counted on a CoreDump instead
// of creating one each, once its budget (spec.limits.coreDumps of the
// policy) was spent: the Event series of events.k8s.io, for crashes. Their
// files were removed from the node. Only the agent that created the
// CoreDump writes it, and the counts only grow.
type CoreDumpSeries struct {
	// count is how many further crashes of this dump's node, container (or
	// hostname) and signature were counted here.
	// +required
	// +kubebuilder:validation:Minimum=0
	Count int64 `json:"count"`
	// otherCount is how many crashes of other containers or signatures on
	// this node were counted here: they came while the node's budget was
	// spent and had no CoreDump of their own to be counted on.
	// +optional
	// +kubebuilder:validation:Minimum=0
	OtherCount int64 `json:"otherCount,omitempty"`
	// firstObserved is when the first crash counted here was found.
	// +required
	FirstObserved metav1.Time `json:"firstObserved"`
	// lastObserved is when the last crash counted here was found.
	// +required
	LastObserved metav1.Time `json:"lastObserved"`
}

// CoreDump is one core dump captured on a node.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:shortName=cdump,categories=coredog
// +kubebuilder:subresource:status
// +kubebuilder:selectablefield:JSONPath=`.spec.nodeName`
// +kubebuilder:selectablefield:JSONPath=`.spec.policyName`
// +kubebuilder:printcolumn:name="Namespace",type=string,JSONPath=`.status.pod.namespace`,description="Namespace of the pod that crashed"
// +kubebuilder:printcolumn:name="Pod",type=string,JSONPath=`.status.pod.name`
// +kubebuilder:printcolumn:name="Container",type=string,JSONPath=`.status.pod.container`
// +kubebuilder:printcolumn:name="Executable",type=string,JSONPath=`.spec.process.executable`
// +kubebuilder:printcolumn:name="Signal",type=string,JSONPath=`.spec.process.signalName`
// +kubebuilder:printcolumn:name="Size",type=string,JSONPath=`.spec.displaySize`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.nodeName`,priority=1
// +kubebuilder:printcolumn:name="Signature",type=string,JSONPath=`.spec.signature`,priority=1
// +kubebuilder:printcolumn:name="Location",type=string,JSONPath=`.status.storage.url`,priority=1
// +kubebuilder:printcolumn:name="Dump Mode",type=string,JSONPath=`.spec.process.dumpMode`,priority=1,description="Privileged: a setuid or credential-changing process dumped as root (fs.suid_dumpable=2)"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.spec) || self.spec == oldSelf.spec",message="CoreDump spec is immutable: it records what the agent found; delete the CoreDump instead"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.series) || (has(self.series) && self.series.count >= oldSelf.series.count && (has(self.series.otherCount) ? self.series.otherCount : 0) >= (has(oldSelf.series.otherCount) ? oldSelf.series.otherCount : 0) && self.series.firstObserved == oldSelf.series.firstObserved)",message="CoreDump series counts only grow and its firstObserved is fixed"
type CoreDump struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec holds the facts the agent found; immutable.
	// +required
	Spec CoreDumpSpec `json:"spec"`

	// series counts the crashes counted on this CoreDump instead of getting
	// one each; absent while there are none.
	// +optional
	Series *CoreDumpSeries `json:"series,omitempty"`

	// status is what the controller did with the dump.
	// +optional
	Status CoreDumpStatus `json:"status,omitempty"`
}

// CoreDumpList is a list of CoreDumps.
//
// +kubebuilder:object:root=true
type CoreDumpList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CoreDump `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &CoreDump{}, &CoreDumpList{})
}
