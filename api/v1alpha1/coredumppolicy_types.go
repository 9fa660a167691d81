package v1alpha1

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// CorePatternMode says who sets the kernel's core_pattern.
// +kubebuilder:validation:Enum=Observe;Manage;Pipe
type CorePatternMode string

const (
	// CorePatternObserve: the admin sets core_pattern; the agent only watches hostPath.
	CorePatternObserve CorePatternMode = "Observe"
	// CorePatternManage: the agent sets kernel.core_pattern to hostPath/fileNamePattern
	// and restores the old value when it exits. The agent runs privileged.
	CorePatternManage CorePatternMode = "Manage"
	// CorePatternPipe: the agent installs a copy of itself under hostPath and
	// sets kernel.core_pattern to pipe cores to it. The kernel runs it in the
	// host's namespaces, so crashes inside containers are caught too (a path
	// pattern is resolved in the crashing process's own mount namespace).
	// The agent runs privileged.
	CorePatternPipe CorePatternMode = "Pipe"
)

// Compression is how a dump is compressed in storage.
// +kubebuilder:validation:Enum=Zstd;Gzip;None
type Compression string

const (
	// CompressionZstd compresses with zstd (.zst).
	CompressionZstd Compression = "Zstd"
	// CompressionGzip compresses with gzip (.gz).
	CompressionGzip Compression = "Gzip"
	// CompressionNone stores the dump as it is.
	CompressionNone Compression = "None"
)

// Defaults that the schema applies; exported so that code paths that build a
// policy by hand (tests, the agent's flags) or read one that predates a
// default agree with the API server. Each +kubebuilder:default marker below
// repeats its value as a literal (markers cannot name Go constants);
// TestDefaultsMatchCRD checks that the generated CRD and these agree.
const (
	// DefaultHostPath is spec.hostPath's default.
	DefaultHostPath = "/var/lib/coredog/cores"
	// DefaultFileNamePattern is spec.fileNamePattern's default.
	DefaultFileNamePattern = "core.%h.%e.%P.%s.%t"
	// DefaultCorePattern is spec.corePattern's default.
	DefaultCorePattern = CorePatternObserve
	// DefaultPollInterval is spec.detection.pollInterval's default.
	DefaultPollInterval = 10 * time.Second
	// DefaultSettleTime is spec.detection.settleTime's default.
	DefaultSettleTime = 2 * time.Second
	// DefaultKeyTemplate is spec.storage.keyTemplate's default. The
	// CoreDump's name is the key's last segment of its own, as every key's
	// is (see storage.KeyTemplate.Render).
	DefaultKeyTemplate = "{{.Namespace}}/{{.Pod}}/{{.Time}}-{{.Executable}}-{{.SignalName}}/{{.Name}}"
	// DefaultCompression is spec.storage.compression's default.
	DefaultCompression = CompressionZstd
	// DefaultMaxNodeUsage is spec.limits.maxNodeUsage's default.
	DefaultMaxNodeUsage = "10Gi"
	// DefaultMinNodeFree is spec.limits.minNodeFree's default.
	DefaultMinNodeFree = "5%"
	// DefaultRateLimitCount is spec.limits.rateLimit.count's default.
	DefaultRateLimitCount int32 = 5
	// DefaultRateLimitWindow is spec.limits.rateLimit.window's default.
	DefaultRateLimitWindow = time.Hour
	// DefaultRetentionTTL is spec.retention.ttl's default.
	DefaultRetentionTTL = 720 * time.Hour
	// DefaultSkippedTTL is spec.retention.skippedTTL's default.
	DefaultSkippedTTL = time.Hour
	// DefaultNodeBurst is spec.limits.coreDumps.nodeBurst's default.
	DefaultNodeBurst int32 = 30
	// DefaultNodePerMinute is spec.limits.coreDumps.nodePerMinute's default.
	DefaultNodePerMinute int32 = 10
	// DefaultSignatureBurst is spec.limits.coreDumps.signatureBurst's default.
	DefaultSignatureBurst int32 = 5
	// DefaultSignaturePerHour is spec.limits.coreDumps.signaturePerHour's default.
	DefaultSignaturePerHour int32 = 6
	// MaxCorePatternBytes is the kernel's limit on core_pattern (CORENAME_MAX_SIZE is 128 with the NUL).
	MaxCorePatternBytes = 127
)

// CoreDumpPolicySpec says where agents run, how they find and read core
// files, which crashes are kept, and where dumps are stored.
// +kubebuilder:validation:XValidation:rule="!has(self.corePattern) || self.corePattern != 'Manage' || size(self.hostPath) + 1 + size(self.fileNamePattern) <= 127",message="with corePattern Manage, hostPath + '/' + fileNamePattern must be at most 127 bytes (the kernel's core_pattern limit): shorten hostPath or fileNamePattern"
// +kubebuilder:validation:XValidation:rule="!has(self.corePattern) || self.corePattern != 'Pipe' || size(self.hostPath) <= 73",message="with corePattern Pipe, hostPath must be at most 73 bytes, so that the pipe command fits the kernel's 127-byte core_pattern"
type CoreDumpPolicySpec struct {
	// nodeSelector limits agents to nodes with these labels. Agents run on Linux nodes only.
	// +optional
	// +kubebuilder:validation:MaxProperties=32
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// tolerations let agents run on tainted nodes.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// priorityClassName of the agent pods.
	// +optional
	// +kubebuilder:validation:MaxLength=253
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// hostPath is the absolute host directory the kernel writes cores into.
	// +optional
	// +kubebuilder:default="/var/lib/coredog/cores"
	// +kubebuilder:validation:MinLength=2
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="self.startsWith('/')",message="hostPath must be an absolute path, e.g. /var/lib/coredog/cores"
	// +kubebuilder:validation:XValidation:rule="!self.matches('(^|/)[.][.]?(/|$)')",message="hostPath must not contain '.' or '..' segments: write the directory plainly"
	// +kubebuilder:validation:XValidation:rule="!self.endsWith('/') && !self.contains('//')",message="hostPath must not end with '/' or contain '//'"
	HostPath string `json:"hostPath,omitempty"`

	// fileNamePattern is the core_pattern file name, with % specifiers
	// (%e %p %P %h %s %t %u %g %i %I %d %%). The agent parses names with it;
	// %d (the dump mode) marks dumps of privileged processes (spec.process.dumpMode).
	// +optional
	// +kubebuilder:default="core.%h.%e.%P.%s.%t"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=127
	// +kubebuilder:validation:XValidation:rule="self.matches('^([^%/|[:space:]]|%[epPhstugiId%])+$')",message="fileNamePattern may use only the specifiers %e %p %P %h %s %t %u %g %i %I %d %%, and no '/', '|' or white space"
	FileNamePattern string `json:"fileNamePattern,omitempty"`

	// corePattern says who sets the kernel's core_pattern: Observe (the admin),
	// Manage (the agent sets it to hostPath/fileNamePattern and restores it on
	// exit; a path pattern catches crashes of host processes and of pods that
	// mount hostPath at the same path), or Pipe (the agent pipes cores to its
	// own receiver, which catches crashes inside containers too).
	// +optional
	// +kubebuilder:default=Observe
	CorePattern CorePatternMode `json:"corePattern,omitempty"`

	// detection tunes how agents find complete files.
	// +optional
	// +kubebuilder:default={}
	Detection DetectionSpec `json:"detection,omitempty"`

	// selector says which crashes are kept; others become Skipped and are removed from the node.
	// +optional
	Selector DumpSelector `json:"selector,omitempty"`

	// storage says where dumps are stored.
	// +required
	Storage StorageSpec `json:"storage"`

	// limits protect nodes and storage.
	// +optional
	// +kubebuilder:default={}
	Limits LimitsSpec `json:"limits,omitempty"`

	// retention says how long dumps are kept.
	// +optional
	// +kubebuilder:default={}
	Retention RetentionSpec `json:"retention,omitempty"`

	// agent overrides the agent container.
	// +optional
	Agent AgentSpec `json:"agent,omitempty"`

	// notifications are the sinks told when a dump reaches its final phase
	// (chat rooms, webhooks, CloudEvents brokers). Sending never delays or
	// fails an upload.
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=16
	Notifications []NotificationSink `json:"notifications,omitempty"`
}

// DetectionSpec tunes how agents find complete core files.
type DetectionSpec struct {
	// pollInterval is the period of the polling fallback; 0s turns periodic polling off
	// (the agent still polls when it cannot watch the directory).
	// +optional
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) >= duration('0s') && duration(self) <= duration('1h')",message="pollInterval must be between 0s and 1h"
	PollInterval *metav1.Duration `json:"pollInterval,omitempty"`

	// settleTime is how long size and modification time must stay still before a
	// file counts as complete (when the writing process cannot be checked).
	// +optional
	// +kubebuilder:default="2s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('10m')",message="settleTime must be positive and at most 10m"
	SettleTime *metav1.Duration `json:"settleTime,omitempty"`
}

// DumpSelector says which crashes are kept.
type DumpSelector struct {
	// namespaceSelector keeps crashes of pods in matching namespaces.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// podSelector keeps crashes of matching pods.
	// +optional
	PodSelector *metav1.LabelSelector `json:"podSelector,omitempty"`
}

// StorageSpec says where and how dumps are stored.
type StorageSpec struct {
	// url of the bucket: s3://bucket/prefix?region=&endpoint=&use_path_style=true,
	// gs://bucket/prefix, azblob://container/prefix, or file:///absolute/dir.
	// +required
	// +kubebuilder:validation:MinLength=6
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^(s3|gs|azblob|file)://')",message="storage.url must start with s3://, gs://, azblob:// or file://"
	// +kubebuilder:validation:XValidation:rule="!self.startsWith('file://') || self.startsWith('file:///')",message="a file:// storage.url needs an absolute path, e.g. file:///var/lib/coredog/store"
	// +kubebuilder:validation:XValidation:rule="self.startsWith('file://') || self.matches('^[a-z0-9]+://[^/?#]+')",message="storage.url must name a bucket, e.g. s3://my-bucket/cores"
	URL string `json:"url"`

	// secretRef names a Secret in the controller's namespace that holds
	// credentials. Absent: each cloud's default chain (IRSA, Workload Identity, instance role).
	// +optional
	SecretRef *SecretReference `json:"secretRef,omitempty"`

	// keyTemplate is a Go template for the object key. Fields: Namespace, Pod,
	// Container, Workload, Node, Executable, Signal, SignalName, Time, Name, Signature.
	// +optional
	// +kubebuilder:default="{{.Namespace}}/{{.Pod}}/{{.Time}}-{{.Executable}}-{{.SignalName}}/{{.Name}}"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:XValidation:rule="!self.matches('[{][{]-?[[:space:]]*(range|template|block|break|continue)([^[:alnum:]_]|$)')",message="keyTemplate must not use range, template, block, break or continue: a key needs only fields, if, with and functions"
	KeyTemplate string `json:"keyTemplate,omitempty"`

	// compression of stored dumps.
	// +optional
	// +kubebuilder:default=Zstd
	Compression Compression `json:"compression,omitempty"`
}

// SecretReference names a Secret in the controller's namespace.
type SecretReference struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`
}

// LimitsSpec protects nodes and storage.
type LimitsSpec struct {
	// maxDumpSize: larger dumps are not uploaded (their metadata is kept, reason TooLarge).
	// +optional
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="maxDumpSize must be positive, e.g. 8Gi"
	MaxDumpSize *resource.Quantity `json:"maxDumpSize,omitempty"`

	// maxNodeUsage is the most disk that cores may use on a node (like systemd's MaxUse).
	// +optional
	// +kubebuilder:default="10Gi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="maxNodeUsage must be positive, e.g. 10Gi"
	MaxNodeUsage *resource.Quantity `json:"maxNodeUsage,omitempty"`

	// minNodeFree is the free space to leave on the node's filesystem (like
	// systemd's KeepFree): a size such as 2Gi or a percentage of the filesystem such as 5%.
	// +optional
	// +kubebuilder:default="5%"
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]|[1-9][0-9])%$') || (self.matches('^[0-9]+([.][0-9]+)?([KMGTPE]i|[mkMGTPE]|[eE][+-]?[0-9]{1,2})?$') && isQuantity(self) && !quantity(self).isLessThan(quantity('0')))",message="minNodeFree must be a size such as 2Gi or a percentage below 100 such as 5%"
	MinNodeFree string `json:"minNodeFree,omitempty"`

	// rateLimit caps uploads per workload and crash signature.
	// +optional
	// +kubebuilder:default={}
	RateLimit RateLimitSpec `json:"rateLimit,omitempty"`

	// coreDumps caps the CoreDump objects each agent creates, so that a pod
	// that crashes in a loop cannot flood the API server and etcd. A crash
	// past these budgets gets no CoreDump of its own: the agent counts it in
	// the series of the latest CoreDump it made for the same container (or
	// hostname) and signature, and removes the file.
	// +optional
	// +kubebuilder:default={}
	CoreDumps CoreDumpBudgetSpec `json:"coreDumps,omitempty"`
}

// CoreDumpBudgetSpec is two token buckets an agent draws on before it
// creates a CoreDump: one for its node, and one for each container (or
// hostname, when the container is not known) and crash signature. A new
// CoreDump needs a token from both.
type CoreDumpBudgetSpec struct {
	// nodeBurst is how many CoreDumps one agent may create at once.
	// +optional
	// +kubebuilder:default=30
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	NodeBurst *int32 `json:"nodeBurst,omitempty"`

	// nodePerMinute is how many CoreDumps one agent may create a minute once its burst is spent.
	// +optional
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=6000
	NodePerMinute *int32 `json:"nodePerMinute,omitempty"`

	// signatureBurst is how many CoreDumps one container (or hostname) and
	// crash signature may have at once on one node.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	SignatureBurst *int32 `json:"signatureBurst,omitempty"`

	// signaturePerHour is how many CoreDumps one container (or hostname) and
	// crash signature may have an hour on one node once its burst is spent.
	// +optional
	// +kubebuilder:default=6
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=360000
	SignaturePerHour *int32 `json:"signaturePerHour,omitempty"`
}

// RateLimitSpec caps uploads per workload and crash signature; dumps past the
// cap are counted, not stored (reason Throttled).
type RateLimitSpec struct {
	// count is the most uploads per workload and signature in one window; 0 stores none.
	// +optional
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	Count *int32 `json:"count,omitempty"`

	// window is the length of the rate-limit window.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="rateLimit.window must be positive, e.g. 1h"
	Window *metav1.Duration `json:"window,omitempty"`
}

// RetentionSpec says how long dumps are kept.
type RetentionSpec struct {
	// ttl: after this a CoreDump and its stored objects are deleted.
	// +optional
	// +kubebuilder:default="720h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="retention.ttl must be positive, e.g. 720h"
	TTL *metav1.Duration `json:"ttl,omitempty"`

	// skippedTTL: after this a CoreDump that was not stored (Skipped:
	// not selected, throttled, refused for the node's disk limit) is
	// deleted. It holds no dump, only the record and its count of crashes.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s')",message="retention.skippedTTL must be positive, e.g. 1h"
	SkippedTTL *metav1.Duration `json:"skippedTTL,omitempty"`
}

// AgentSpec overrides the agent container.
type AgentSpec struct {
	// image of the agent; default: the controller's own image.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image,omitempty"`

	// resources of the agent container.
	// +optional
	Resources corev1.ResourceRequirements `json:"resources,omitempty"`
}

// DumpCounters count dumps by outcome.
type DumpCounters struct {
	// captured dumps (CoreDumps created by this policy's agents).
	// +optional
	Captured int64 `json:"captured,omitempty"`
	// uploaded dumps.
	// +optional
	Uploaded int64 `json:"uploaded,omitempty"`
	// skipped dumps (not selected, too large, throttled, over quota).
	// +optional
	Skipped int64 `json:"skipped,omitempty"`
	// failed dumps.
	// +optional
	Failed int64 `json:"failed,omitempty"`
	// counted crashes: those the agents counted on an existing CoreDump
	// (its series) instead of creating one, once their creation budget
	// (spec.limits.coreDumps) was spent. Their files were removed from the
	// node. captured + counted is every crash the agents saw.
	// +optional
	Counted int64 `json:"counted,omitempty"`
}

// CoreDumpPolicyStatus is what the controller observed.
type CoreDumpPolicyStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready, Conflict, StorageValid, NotificationsReady.
	// +optional
	// +listType=map
	// +listMapKey=type
	// +kubebuilder:validation:MaxItems=16
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// desiredAgents is the number of nodes that should run an agent.
	// +optional
	// +kubebuilder:default=0
	DesiredAgents int32 `json:"desiredAgents"`

	// readyAgents is the number of agents that are ready.
	// +optional
	// +kubebuilder:default=0
	ReadyAgents int32 `json:"readyAgents"`

	// daemonSetName is the agent DaemonSet in the controller's namespace.
	// +optional
	DaemonSetName string `json:"daemonSetName,omitempty"`

	// dumps counts this policy's dumps by outcome.
	// +optional
	Dumps DumpCounters `json:"dumps,omitempty"`
}

// CoreDumpPolicy says on which nodes CoreDog captures core dumps, how, and where it stores them.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=cdp,categories=coredog
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=integer,JSONPath=`.status.readyAgents`
// +kubebuilder:printcolumn:name="Desired",type=integer,JSONPath=`.status.desiredAgents`
// +kubebuilder:printcolumn:name="Storage",type=string,JSONPath=`.spec.storage.url`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:validation:XValidation:rule="size(self.metadata.name) <= 40",message="CoreDumpPolicy names must be at most 40 characters (agent DaemonSet and Secret names are built from them)"
type CoreDumpPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the desired behaviour.
	// +required
	Spec CoreDumpPolicySpec `json:"spec"`

	// status is what the controller observed.
	// +optional
	Status CoreDumpPolicyStatus `json:"status,omitempty"`
}

// CoreDumpPolicyList is a list of CoreDumpPolicies.
//
// +kubebuilder:object:root=true
type CoreDumpPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []CoreDumpPolicy `json:"items"`
}

func init() {
	knownTypes = append(knownTypes, &CoreDumpPolicy{}, &CoreDumpPolicyList{})
}
