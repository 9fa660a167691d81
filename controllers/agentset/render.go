// Package agentset renders the objects that run a CoreDumpPolicy's node
// agents: the DaemonSet and the names of its TLS Secrets. It is pure: it turns
// a policy and the controller's settings into objects and never talks to the
// API server (the policy reconciler applies what it renders).
package agentset

import (
	"cmp"
	"maps"
	"path"
	"sort"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Paths and ports inside the agent container.
const (
	ContainerName = "agent"
	TLSMountPath  = "/etc/coredog/tls"
	ProcRoot      = "/proc"
	SysctlPath    = "/proc/sys/kernel/core_pattern"
	ServePort     = 9443
	MetricsPort   = 8443
	HealthPort    = 8081
)

// Options are the controller's settings that shape every agent.
type Options struct {
	// Namespace is the controller's namespace, where agents and Secrets live.
	Namespace string
	// DefaultImage is the agent image when the policy names none.
	DefaultImage string
	// ServiceAccount the agents run as.
	ServiceAccount string
	// TLSHash is a fingerprint of the policy's CA certificate; it changes
	// the pod template when the CA is replaced, so that agents restart with
	// a new key and ask the new CA for a certificate.
	TLSHash string
}

// DaemonSetName is the agent DaemonSet of a policy.
func DaemonSetName(policy string) string { return "coredog-agent-" + policy }

// CASecretName is the Secret that holds a policy's private CA (controller only).
func CASecretName(policy string) string { return "coredog-" + policy + "-ca" }

// AgentCASecretName is the Secret the agents mount: the policy's CA
// certificate alone (ca.crt), which verifies the controller's client
// certificate and the serving certificate the manager issues each agent.
// No key: each agent makes its own serving key and keeps it in memory.
func AgentCASecretName(policy string) string { return "coredog-" + policy + "-agent-ca" }

// LegacyAgentTLSSecretName is the Secret that held one serving key for all
// of a policy's agents, before each agent had its own; the manager deletes it.
func LegacyAgentTLSSecretName(policy string) string { return "coredog-" + policy + "-agent-tls" }

// LabelPrivileged marks the pods of agents that run privileged (Manage and
// Pipe modes), so that the manager can be kept off their nodes (the chart's
// manager.avoidAgentNodes).
const LabelPrivileged = "coredog.io/privileged"

// SelectorLabels identify one policy's agent pods.
func SelectorLabels(policy string) map[string]string {
	return map[string]string{
		"app.kubernetes.io/name":     "coredog-agent",
		"app.kubernetes.io/instance": policy,
	}
}

// Labels are set on every object rendered for a policy.
func Labels(policy string) map[string]string {
	l := SelectorLabels(policy)
	l["app.kubernetes.io/managed-by"] = "coredog"
	l["app.kubernetes.io/component"] = "agent"
	l[coredogv1.LabelPolicy] = policy
	return l
}

// DefaultResources are the agent's resources when the policy sets none:
// small, since the agent streams dumps with bounded buffers.
func DefaultResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{
			corev1.ResourceCPU:    resource.MustParse("10m"),
			corev1.ResourceMemory: resource.MustParse("32Mi"),
		},
		Limits: corev1.ResourceList{
			corev1.ResourceMemory: resource.MustParse("128Mi"),
		},
	}
}

// RenderDaemonSet is the agent DaemonSet for a policy. The policy is expected
// to carry the API server's defaults; missing values fall back to the same
// defaults so that a hand-built policy renders the same way.
func RenderDaemonSet(p *coredogv1.CoreDumpPolicy, opts Options) *appsv1.DaemonSet {
	spec := p.Spec
	hostPath := cmp.Or(spec.HostPath, coredogv1.DefaultHostPath)
	pattern := cmp.Or(spec.FileNamePattern, coredogv1.DefaultFileNamePattern)
	// Both modes that write kernel.core_pattern need a writable /proc/sys.
	manage := spec.CorePattern == coredogv1.CorePatternManage || spec.CorePattern == coredogv1.CorePatternPipe
	image := cmp.Or(spec.Agent.Image, opts.DefaultImage)

	resources := spec.Agent.Resources
	if len(resources.Requests) == 0 && len(resources.Limits) == 0 {
		resources = DefaultResources()
	}

	nodeSelector := map[string]string{}
	maps.Copy(nodeSelector, spec.NodeSelector)
	// The agent is a Linux program; a policy cannot move it elsewhere.
	nodeSelector[corev1.LabelOSStable] = "linux"

	args := []string{
		"--policy=" + p.Name,
		"--namespace=" + opts.Namespace,
		"--node-name=$(NODE_NAME)",
		"--dir=" + hostPath,
		"--file-name-pattern=" + pattern,
		"--proc-root=" + ProcRoot,
		"--listen=:" + strconv.Itoa(ServePort),
		"--advertise-address=$(POD_IP)",
		"--tls-dir=" + TLSMountPath,
		"--metrics-bind-address=:" + strconv.Itoa(MetricsPort),
		"--health-probe-bind-address=:" + strconv.Itoa(HealthPort),
	}
	// The agent reads its settings from these flags alone: it has no right
	// to read policies, which are cluster-scoped.
	if d := spec.Detection.PollInterval; d != nil {
		args = append(args, "--poll-interval="+d.Duration.String())
	}
	if d := spec.Detection.SettleTime; d != nil {
		args = append(args, "--settle-time="+d.Duration.String())
	}
	if q := spec.Limits.MaxNodeUsage; q != nil {
		args = append(args, "--max-node-usage="+q.String())
	}
	if spec.Limits.MinNodeFree != "" {
		args = append(args, "--min-node-free="+spec.Limits.MinNodeFree)
	}
	budget := spec.Limits.CoreDumps
	for _, f := range []struct {
		flag string
		v    *int32
	}{
		{"--node-burst", budget.NodeBurst}, {"--node-per-minute", budget.NodePerMinute},
		{"--signature-burst", budget.SignatureBurst}, {"--signature-per-hour", budget.SignaturePerHour},
	} {
		if f.v != nil {
			args = append(args, f.flag+"="+strconv.Itoa(int(*f.v)))
		}
	}
	if manage {
		args = append(args, "--core-pattern="+string(spec.CorePattern), "--sysctl-path="+SysctlPath)
	}

	security := &corev1.SecurityContext{
		ReadOnlyRootFilesystem:   new(true),
		AllowPrivilegeEscalation: new(false),
		// Root without capabilities owns the host directory; DAC_OVERRIDE
		// reads cores that crashing processes of any user wrote with mode
		// 0600, FOWNER removes them from a sticky directory. Not
		// DAC_READ_SEARCH: it also allows open_by_handle_at, which opens any
		// file of the hostPath's filesystem (the kubelet's keys included)
		// from a guessed handle.
		RunAsUser:    ptr.To[int64](0),
		RunAsNonRoot: new(false),
		Capabilities: &corev1.Capabilities{
			Drop: []corev1.Capability{"ALL"},
			Add:  []corev1.Capability{"DAC_OVERRIDE", "FOWNER"},
		},
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
	if manage {
		// Writing kernel.core_pattern is only possible through a writable
		// /proc/sys, which the runtime gives privileged containers alone.
		security.Privileged = new(true)
		security.AllowPrivilegeEscalation = new(true)
		security.Capabilities = nil
	}

	podAnnotations := map[string]string{
		coredogv1.AnnotationPolicyGeneration: strconv.FormatInt(p.Generation, 10),
	}
	if opts.TLSHash != "" {
		podAnnotations[coredogv1.AnnotationTLSHash] = opts.TLSHash
	}

	tolerations := append([]corev1.Toleration(nil), spec.Tolerations...)
	sort.SliceStable(tolerations, func(i, j int) bool { return tolerations[i].Key < tolerations[j].Key })

	container := corev1.Container{
		Name:            ContainerName,
		Image:           image,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Command:         []string{"/agent"},
		Args:            args,
		Env: []corev1.EnvVar{
			fieldEnv("NODE_NAME", "spec.nodeName"),
			fieldEnv("POD_IP", "status.podIP"),
			fieldEnv("POD_NAMESPACE", "metadata.namespace"),
			// The Go runtime's soft memory limit, in bytes: as the agent's
			// memory nears the container's limit its collector works
			// harder instead of letting the heap grow into the OOM killer.
			// Without a limit this is the node's allocatable memory, which
			// changes nothing.
			{Name: "GOMEMLIMIT", ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				ContainerName: ContainerName, Resource: "limits.memory", Divisor: resource.MustParse("1"),
			}}},
		},
		Ports: []corev1.ContainerPort{
			{Name: "dumps", ContainerPort: ServePort, Protocol: corev1.ProtocolTCP},
			{Name: "metrics", ContainerPort: MetricsPort, Protocol: corev1.ProtocolTCP},
			{Name: "health", ContainerPort: HealthPort, Protocol: corev1.ProtocolTCP},
		},
		Resources: resources,
		VolumeMounts: []corev1.VolumeMount{
			{Name: "cores", MountPath: hostPath},
			{Name: "tls", MountPath: TLSMountPath, ReadOnly: true},
			{Name: "tmp", MountPath: "/tmp"},
		},
		LivenessProbe:   probe("/healthz", 10),
		ReadinessProbe:  probe("/readyz", 5),
		SecurityContext: security,
	}

	podLabels := Labels(p.Name)
	if manage {
		podLabels[LabelPrivileged] = "true"
	}

	ds := &appsv1.DaemonSet{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "DaemonSet"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      DaemonSetName(p.Name),
			Namespace: opts.Namespace,
			Labels:    Labels(p.Name),
		},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: SelectorLabels(p.Name)},
			UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
				Type: appsv1.RollingUpdateDaemonSetStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDaemonSet{
					MaxUnavailable: new(intstr.FromString("10%")),
				},
			},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: podAnnotations,
				},
				Spec: corev1.PodSpec{
					ServiceAccountName:            opts.ServiceAccount,
					AutomountServiceAccountToken:  new(true),
					HostPID:                       true,
					NodeSelector:                  nodeSelector,
					Tolerations:                   tolerations,
					PriorityClassName:             spec.PriorityClassName,
					TerminationGracePeriodSeconds: ptr.To[int64](30),
					Containers:                    []corev1.Container{container},
					Volumes: []corev1.Volume{
						{Name: "cores", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{
							Path: path.Clean(hostPath),
							Type: ptr.To(corev1.HostPathDirectoryOrCreate),
						}}},
						{Name: "tls", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
							SecretName:  AgentCASecretName(p.Name),
							DefaultMode: ptr.To[int32](0o400),
						}}},
						{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{
							SizeLimit: new(resource.MustParse("16Mi")),
						}}},
					},
				},
			},
		},
	}
	return ds
}

func fieldEnv(name, fieldPath string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: fieldPath},
	}}
}

func probe(path string, period int32) *corev1.Probe {
	return &corev1.Probe{
		ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
			Path: path, Port: intstr.FromString("health"),
		}},
		PeriodSeconds:    period,
		FailureThreshold: 3,
	}
}
