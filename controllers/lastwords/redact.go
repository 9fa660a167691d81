package lastwords

import (
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Redacted replaces a value that is not kept.
const Redacted = "(redacted)"

// lastApplied is kubectl's copy of the whole object as applied: it holds
// every env value in clear.
const lastApplied = "kubectl.kubernetes.io/last-applied-configuration"

// secretName matches names that say their value is a secret.
var secretName = regexp.MustCompile(`(?i)(pass(wd|word)?|secret|token|api[-_]?key|private[-_]?key|credential|auth|session|cookie|signature|dsn)`)

// Snapshot is the pod as the metadata document keeps it: spec and status,
// and the metadata that says whose it is, without what may hold secrets.
// Removed or replaced by Redacted: every env value (valueFrom references
// stay: they name a Secret or ConfigMap key, not its content), the
// last-applied-configuration annotation (it repeats the env values),
// annotations whose name looks secret, the value of arguments and probe or
// hook commands that look like a secret flag (--password=x, or --token x),
// HTTP probe header values, and managedFields (noise).
func Snapshot(pod *corev1.Pod) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{
			Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID, ResourceVersion: pod.ResourceVersion,
			CreationTimestamp: pod.CreationTimestamp, Labels: pod.Labels, OwnerReferences: pod.OwnerReferences,
		},
		Spec:   *pod.Spec.DeepCopy(),
		Status: *pod.Status.DeepCopy(),
	}
	for k, v := range pod.Annotations {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		if k == lastApplied || secretName.MatchString(k) {
			v = Redacted
		}
		p.Annotations[k] = v
	}
	for i := range p.Spec.InitContainers {
		redactContainer(&p.Spec.InitContainers[i])
	}
	for i := range p.Spec.Containers {
		redactContainer(&p.Spec.Containers[i])
	}
	for i := range p.Spec.EphemeralContainers {
		redactContainer((*corev1.Container)(&p.Spec.EphemeralContainers[i].EphemeralContainerCommon))
	}
	return p
}

func redactContainer(c *corev1.Container) {
	for i := range c.Env {
		if c.Env[i].Value != "" {
			c.Env[i].Value = Redacted
		}
	}
	c.Command = redactArgs(c.Command)
	c.Args = redactArgs(c.Args)
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
		redactHandler(p)
	}
	if l := c.Lifecycle; l != nil {
		for _, h := range []*corev1.LifecycleHandler{l.PostStart, l.PreStop} {
			if h == nil {
				continue
			}
			if h.Exec != nil {
				h.Exec.Command = redactArgs(h.Exec.Command)
			}
			if h.HTTPGet != nil {
				redactHeaders(h.HTTPGet.HTTPHeaders)
			}
		}
	}
}

func redactHandler(p *corev1.Probe) {
	if p == nil {
		return
	}
	if p.Exec != nil {
		p.Exec.Command = redactArgs(p.Exec.Command)
	}
	if p.HTTPGet != nil {
		redactHeaders(p.HTTPGet.HTTPHeaders)
	}
}

func redactHeaders(h []corev1.HTTPHeader) {
	for i := range h {
		h[i].Value = Redacted
	}
}

// redactArgs replaces the value of secret-looking flags: NAME=value (any
// prefix of dashes) keeps NAME, and a bare secret-looking flag hides the
// argument after it.
func redactArgs(args []string) []string {
	hideNext := false
	for i, a := range args {
		if hideNext {
			args[i], hideNext = Redacted, false
			continue
		}
		name, _, hasValue := strings.Cut(a, "=")
		if !secretName.MatchString(name) {
			continue
		}
		if hasValue {
			args[i] = name + "=" + Redacted
		} else if strings.HasPrefix(a, "-") {
			hideNext = true
		}
	}
	return args
}
