package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NotificationSinkType is the kind of endpoint a sink posts to; it decides
// the payload's shape.
// +kubebuilder:validation:Enum=Webhook;CloudEvents;Slack;Teams;WeCom;DingTalk;Lark
type NotificationSinkType string

const (
	// NotificationWebhook posts CoreDog's own JSON document.
	NotificationWebhook NotificationSinkType = "Webhook"
	// NotificationCloudEvents posts a CloudEvents 1.0 event in structured
	// mode (application/cloudevents+json).
	NotificationCloudEvents NotificationSinkType = "CloudEvents"
	// NotificationSlack posts to a Slack incoming webhook (text and blocks).
	NotificationSlack NotificationSinkType = "Slack"
	// NotificationTeams posts an Adaptive Card to a Microsoft Teams workflow
	// or incoming webhook.
	NotificationTeams NotificationSinkType = "Teams"
	// NotificationWeCom posts markdown to a WeCom (WeChat Work) group robot.
	NotificationWeCom NotificationSinkType = "WeCom"
	// NotificationDingTalk posts markdown to a DingTalk custom robot.
	NotificationDingTalk NotificationSinkType = "DingTalk"
	// NotificationLark posts text to a Lark (Feishu) custom bot.
	NotificationLark NotificationSinkType = "Lark"
)

// NotificationTrigger is a final phase that sends a notification.
// +kubebuilder:validation:Enum=Uploaded;Skipped;Failed
type NotificationTrigger string

const (
	// NotifyOnUploaded: the dump is in storage.
	NotifyOnUploaded NotificationTrigger = "Uploaded"
	// NotifyOnSkipped: the dump was not stored because it was too large,
	// throttled or over the node's quota. Dumps the policy's selectors leave
	// out (NotSelected) never notify. Throttled dumps notify once per rate
	// limit window, with their count.
	NotifyOnSkipped NotificationTrigger = "Skipped"
	// NotifyOnFailed: the upload failed for good.
	NotifyOnFailed NotificationTrigger = "Failed"
)

// SignalName is a Linux signal name such as SIGSEGV.
// +kubebuilder:validation:MinLength=4
// +kubebuilder:validation:MaxLength=16
// +kubebuilder:validation:Pattern=`^SIG[A-Z0-9]{1,13}$`
type SignalName string

// DefaultNotifyOn is a sink's spec.notifications[].on default: the final
// phases that notify when the sink names none.
func DefaultNotifyOn() []NotificationTrigger {
	return []NotificationTrigger{NotifyOnUploaded, NotifyOnFailed}
}

// Notification defaults and limits.
const (
	// DefaultLinkExpiry is how long a pre-signed download link works: long
	// enough to act on an alert, short enough that a link forwarded or left
	// in a channel's history stops opening a copy of process memory.
	DefaultLinkExpiry = time.Hour
	// MaxLinkExpiry is the longest pre-signed link S3 (SigV4) and GCS (V4) allow.
	MaxLinkExpiry = 7 * 24 * time.Hour
	// DefaultSinkURLKey is the Secret key that holds a sink's URL.
	DefaultSinkURLKey = "url"
	// DefaultSigningSecretKey is the Secret key that holds a DingTalk or Lark signing secret.
	DefaultSigningSecretKey = "secret"
	// SinkTokenKey, when present in a Webhook or CloudEvents sink's Secret,
	// is sent as a bearer token.
	SinkTokenKey = "token"
)

// NotificationSink is one place told about dumps.
// +kubebuilder:validation:XValidation:rule="!has(self.signingSecretRef) || self.type == 'DingTalk' || self.type == 'Lark'",message="signingSecretRef applies to DingTalk and Lark sinks only: remove it or change the type"
type NotificationSink struct {
	// name identifies the sink in the policy's NotificationsReady condition
	// and in the coredog.io/notified annotation of CoreDumps; a DNS label,
	// unique within the policy.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// type of the endpoint: Webhook, CloudEvents, Slack, Teams, WeCom,
	// DingTalk or Lark.
	// +required
	Type NotificationSinkType `json:"type"`

	// secretRef names the Secret key, in the controller's namespace, whose
	// value is the sink's URL (webhook URLs carry their token). For Webhook
	// and CloudEvents sinks, a key "token" in the same Secret, when present,
	// is sent as a bearer token. The URL never appears in logs or status.
	// +required
	SecretRef SinkSecretRef `json:"secretRef"`

	// signingSecretRef names the Secret key that holds the robot's signing
	// secret (DingTalk "SEC...", Lark signature verification). Only for
	// DingTalk and Lark; absent means the robot does not check signatures.
	// +optional
	SigningSecretRef *SigningSecretRef `json:"signingSecretRef,omitempty"`

	// on lists the final phases that notify: Uploaded, Skipped, Failed.
	// +optional
	// +kubebuilder:default={Uploaded,Failed}
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=3
	// +listType=set
	On []NotificationTrigger `json:"on,omitempty"`

	// namespaceSelector limits the sink to dumps of pods in matching
	// namespaces; dumps whose pod is unknown then do not notify. Absent: all.
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// signals limits the sink to dumps with these signals, e.g. [SIGSEGV,
	// SIGABRT]. Absent or empty: all.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	Signals []SignalName `json:"signals,omitempty"`

	// linkExpiry is how long the download link in a notification works, for
	// s3://, gs:// and azblob:// storage (a pre-signed URL); file:// storage
	// gets the stored location instead. At most 168h.
	// +optional
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="duration(self) > duration('0s') && duration(self) <= duration('168h')",message="linkExpiry must be positive and at most 168h (7 days, the longest S3 and GCS pre-signed URLs live)"
	LinkExpiry *metav1.Duration `json:"linkExpiry,omitempty"`
}

// SinkSecretRef names the key of a Secret, in the controller's namespace,
// that holds a sink's URL.
type SinkSecretRef struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key in the Secret whose value is the URL.
	// +optional
	// +kubebuilder:default=url
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}

// SigningSecretRef names the key of a Secret, in the controller's namespace,
// that holds a robot's signing secret.
type SigningSecretRef struct {
	// name of the Secret.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`
	Name string `json:"name"`

	// key in the Secret whose value is the signing secret.
	// +optional
	// +kubebuilder:default=secret
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key,omitempty"`
}
