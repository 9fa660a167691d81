package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
)

// Label keys the controller sets on CoreDumps so that `kubectl get coredumps -l` works.
const (
	// LabelNode is the node the dump was captured on.
	LabelNode = "coredog.io/node"
	// LabelPolicy is the CoreDumpPolicy whose agent captured the dump.
	LabelPolicy = "coredog.io/policy"
	// LabelNamespace is the namespace of the pod that crashed.
	LabelNamespace = "coredog.io/namespace"
	// LabelPod is the name of the pod that crashed.
	LabelPod = "coredog.io/pod"
	// LabelSignal is the signal name, e.g. SIGSEGV.
	LabelSignal = "coredog.io/signal"
	// LabelSignature is the crash signature.
	LabelSignature = "coredog.io/signature"
	// LabelComponent marks objects CoreDog renders (agent DaemonSets, Secrets).
	LabelComponent = "coredog.io/component"
)

// Annotation keys the controller sets on CoreDumps.
const (
	// AnnotationPodUID is the UID of the pod that crashed.
	AnnotationPodUID = "coredog.io/pod-uid"
	// AnnotationContainer is the container that crashed.
	AnnotationContainer = "coredog.io/container"
	// AnnotationImage is the image of that container.
	AnnotationImage = "coredog.io/image"
	// AnnotationWorkload is Kind/name of the pod's workload.
	AnnotationWorkload = "coredog.io/workload"
	// AnnotationPolicyGeneration records the policy generation an agent DaemonSet was rendered from.
	AnnotationPolicyGeneration = "coredog.io/policy-generation"
	// AnnotationTLSHash is a hash of the agent TLS material, so that a rotation rolls the agents.
	AnnotationTLSHash = "coredog.io/tls-hash"
	// AnnotationNotify lists (comma-separated) the notification sinks a
	// CoreDump is due at, decided when it reached its final phase.
	AnnotationNotify = "coredog.io/notify"
	// AnnotationNotified lists the sinks that accepted the CoreDump's
	// notification; a restart or a re-reconcile does not send it again.
	AnnotationNotified = "coredog.io/notified"
	// AnnotationNotifyFailed lists the sinks that did not accept the
	// notification after every retry.
	AnnotationNotifyFailed = "coredog.io/notify-failed"
	// AnnotationNotifySummarizedBy names the throttled CoreDump whose
	// notification counts this one (one notification per rate-limit window).
	AnnotationNotifySummarizedBy = "coredog.io/notify-summarized-by"
)

// Finalizers.
const (
	// FinalizerCleanup lets the controller delete stored objects before a CoreDump goes away.
	FinalizerCleanup = "coredog.io/cleanup"
)

// Condition types.
const (
	// ConditionReady on a CoreDumpPolicy: storage settings are valid, there is no
	// conflict, and every desired agent is ready.
	ConditionReady = "Ready"
	// ConditionConflict on a CoreDumpPolicy: another, older policy selects an
	// overlapping set of nodes with the same or a nested hostPath; this one runs no agents.
	ConditionConflict = "Conflict"
	// ConditionStorageValid on a CoreDumpPolicy: the storage URL, key template
	// and credentials Secret are usable.
	ConditionStorageValid = "StorageValid"
	// ConditionPodResolved on a CoreDump: the owning pod was found (or could not be).
	ConditionPodResolved = "PodResolved"
	// ConditionUploaded on a CoreDump: the dump is in storage.
	ConditionUploaded = "Uploaded"
	// ConditionNotificationsReady on a CoreDumpPolicy: every notification
	// sink's Secret is usable and no sink keeps failing. Absent when the
	// policy has no sinks.
	ConditionNotificationsReady = "NotificationsReady"
)

// Condition reasons.
const (
	// ReasonAgentsReady: every desired agent is ready.
	ReasonAgentsReady = "AgentsReady"
	// ReasonAgentsNotReady: some desired agents are not ready yet.
	ReasonAgentsNotReady = "AgentsNotReady"
	// ReasonNoNodes: the policy selects no nodes.
	ReasonNoNodes = "NoNodes"
	// ReasonOverlap: another policy owns the same hostPath on overlapping nodes.
	ReasonOverlap = "Overlap"
	// ReasonNoOverlap: no other policy competes for this policy's nodes and hostPath.
	ReasonNoOverlap = "NoOverlap"
	// ReasonStorageValid: storage settings parse and the Secret exists.
	ReasonStorageValid = "Valid"
	// ReasonInvalidStorageURL: spec.storage.url does not parse or has an unsupported scheme.
	ReasonInvalidStorageURL = "InvalidStorageURL"
	// ReasonInvalidKeyTemplate: spec.storage.keyTemplate does not parse.
	ReasonInvalidKeyTemplate = "InvalidKeyTemplate"
	// ReasonSecretNotFound: spec.storage.secretRef names a Secret that does not exist.
	ReasonSecretNotFound = "SecretNotFound"
	// ReasonStorageInvalid: the storage settings are not usable (see the message).
	ReasonStorageInvalid = "StorageInvalid"
	// ReasonTLSFailed: the agent TLS material could not be created.
	ReasonTLSFailed = "TLSFailed"
	// ReasonSinksReady: every notification sink is configured and delivering.
	ReasonSinksReady = "SinksReady"
	// ReasonSinkSecretInvalid: a sink's Secret is missing, lacks its key, or
	// does not hold an http(s) URL.
	ReasonSinkSecretInvalid = "SinkSecretInvalid"
	// ReasonSinkFailing: a sink keeps refusing notifications or cannot be reached.
	ReasonSinkFailing = "SinkFailing"
)

// Reasons recorded in CoreDump status.reason (and spec.refusedReason for the agent's own refusals).
const (
	// ReasonNotSelected: the pod is outside the policy's selectors.
	ReasonNotSelected = "NotSelected"
	// ReasonTooLarge: the dump is larger than spec.limits.maxDumpSize
	// (Skipped), or than the largest object CoreDog writes (Failed).
	ReasonTooLarge = "TooLarge"
	// ReasonThrottled: the rate limit for this workload and crash signature was reached.
	ReasonThrottled = "Throttled"
	// ReasonQuotaExceeded: keeping the file would break the node disk guard.
	ReasonQuotaExceeded = "QuotaExceeded"
	// ReasonUploaded: the store confirmed the write (status.reason of an
	// Uploaded dump and the Uploaded condition's reason).
	ReasonUploaded = "Uploaded"
	// ReasonUploadPending: the storage key is fixed and the first upload
	// attempt is due.
	ReasonUploadPending = "UploadPending"
	// ReasonUploadRetrying: an upload attempt failed; the next one waits out
	// a backoff (status.nextAttemptAt).
	ReasonUploadRetrying = "UploadRetrying"
	// ReasonUploadFailed: every upload attempt failed; the dump is Failed.
	ReasonUploadFailed = "UploadFailed"
	// ReasonPolicyNotFound: the dump's CoreDumpPolicy does not exist; the
	// dump waits on its node.
	ReasonPolicyNotFound = "PolicyNotFound"
	// ReasonResolved: the PodResolved condition's reason when the owning pod was found.
	ReasonResolved = "Resolved"
	// ReasonUnresolved: the PodResolved condition's reason when no single pod
	// could be named (see the condition's message for the candidates).
	ReasonUnresolved = "Unresolved"
)

// Event reasons the controller records; the CLI and the tests look events up by them.
const (
	// EventCoreDumped is recorded on the pod that crashed (and on the CoreDump when no pod is known).
	EventCoreDumped = "CoreDumped"
	// EventUploadFailed is recorded on a CoreDump whose upload failed for good.
	EventUploadFailed = "UploadFailed"
	// EventUploadRetrying is recorded on a CoreDump whose uploads keep
	// failing (several attempts in a row), once: a store that is down or a
	// bucket that is gone would otherwise show only in the status until the
	// last attempt, hours later.
	EventUploadRetrying = "UploadRetrying"
	// EventThrottled is recorded on a CoreDump the rate limit refused.
	EventThrottled = "Throttled"
	// EventCleanupFailed is recorded when stored objects could not be deleted.
	EventCleanupFailed = "CleanupFailed"
)

// labelValueRE is what Kubernetes accepts as a label value.
var (
	labelValueRE     = regexp.MustCompile(`^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$`)
	labelUnsafeRE    = regexp.MustCompile(`[^-A-Za-z0-9_.]`)
	labelUntrimmedRE = regexp.MustCompile(`^[^A-Za-z0-9]+|[^A-Za-z0-9]+$`)
)

// LabelValue makes v usable as a label value: v itself when it is one,
// otherwise a readable prefix and a hash, so that long node names or odd
// executable names still label their CoreDumps (selection by the full value
// is through the selectable fields spec.nodeName and spec.policyName).
func LabelValue(v string) string {
	if len(v) <= 63 && labelValueRE.MatchString(v) {
		return v
	}
	sum := sha256.Sum256([]byte(v))
	h := hex.EncodeToString(sum[:])[:10]
	prefix := labelUnsafeRE.ReplaceAllString(v, "_")
	if len(prefix) > 52 {
		prefix = prefix[:52]
	}
	prefix = labelUntrimmedRE.ReplaceAllString(prefix, "")
	if prefix == "" {
		return h
	}
	return prefix + "-" + h
}
