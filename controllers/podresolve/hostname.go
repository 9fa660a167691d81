package podresolve

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// maxHostnameLen is the kubelet's cap on a pod's hostname: the kernel's
// nodename holds 64 bytes including the terminating NUL.
const maxHostnameLen = 63

// kubeletHostname truncates a hostname the way the kubelet does
// (truncatePodHostnameIfNeeded): to 63 bytes, then without trailing '-' or
// '.', which a hostname may not end with.
func kubeletHostname(h string) string {
	if len(h) <= maxHostnameLen {
		return h
	}
	return strings.TrimRight(h[:maxHostnameLen], "-.")
}

// hostnameMatches reports whether a process with hostname h can have run in
// pod. Host-network pods share the node's UTS namespace, so their hostname is
// the node's and says nothing about the pod.
func hostnameMatches(pod *corev1.Pod, h string) bool {
	if h == "" || pod.Spec.HostNetwork {
		return false
	}
	if o := pod.Spec.HostnameOverride; o != nil && *o != "" {
		// The override may be 64 bytes; accept it whole or truncated, since
		// either is the same pod.
		return strings.EqualFold(h, *o) || strings.EqualFold(h, kubeletHostname(*o))
	}
	short := pod.Name
	if pod.Spec.Hostname != "" {
		short = pod.Spec.Hostname
	}
	short = kubeletHostname(short)
	if pod.Spec.SetHostnameAsFQDN != nil && *pod.Spec.SetHostnameAsFQDN && pod.Spec.Subdomain != "" {
		// The kernel holds <hostname>.<subdomain>.<namespace>.svc.<cluster domain>;
		// the cluster domain is the kubelet's setting, unknown here.
		prefix := short + "." + pod.Spec.Subdomain + "." + pod.Namespace + ".svc."
		return len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix)
	}
	// DNS names are case-insensitive; pod names are lower case anyway.
	return strings.EqualFold(h, short)
}
