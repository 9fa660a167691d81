package corefile

import (
	"bytes"
	"strings"
)

// Runtime names returned in CgroupInfo.Runtime; they are the scheme Kubernetes uses in
// a container status's containerID ("containerd://<id>").
const (
	RuntimeContainerd = "containerd"
	RuntimeCRIO       = "cri-o"
	RuntimeDocker     = "docker"
)

const (
	// maxCgroupBytes bounds the work on a cgroup file; real ones are a few hundred
	// bytes even with every v1 controller listed.
	maxCgroupBytes = 64 << 10
	containerIDLen = 64
)

// CgroupInfo is what a /proc/<pid>/cgroup file says about the process's container.
type CgroupInfo struct {
	ID      string // 64 lowercase hex characters
	Runtime string // RuntimeContainerd, RuntimeCRIO, RuntimeDocker, or "" when the layout does not say
	PodUID  string // with dashes; "" when the process is not in a Kubernetes pod cgroup
}

// match quality of a container ID found in a cgroup path; higher is more certain.
const (
	qualityNone     = iota
	qualityBare     // a bare 64-hex segment somewhere
	qualityUnderPod // a bare 64-hex segment directly under a pod<uid> segment
	qualityRuntime  // a runtime-specific name: cri-containerd-, crio-, docker-, /docker/<id>
)

// runtimePrefixes are the systemd scope (or cgroupfs directory) prefixes each runtime
// gives a container. "crio-conmon-" is deliberately absent: that cgroup holds CRI-O's
// monitor process, and a crash there is conmon's, not the container's.
var runtimePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", RuntimeContainerd},
	{"crio-", RuntimeCRIO},
	{"docker-", RuntimeDocker},
}

// ContainerID extracts the container ID, its runtime and the pod UID from the contents
// of /proc/<pid>/cgroup, for cgroup v2 ("0::/path") and v1 ("N:controllers:/path")
// files with the systemd or the cgroupfs driver. ok reports whether a container ID was
// found; PodUID may be set even when it was not (a pod-level cgroup, CRI-O's conmon).
// When lines disagree the most specific match wins, then the earliest line.
func ContainerID(cgroup []byte) (CgroupInfo, bool) {
	if len(cgroup) > maxCgroupBytes {
		cgroup = cgroup[:maxCgroupBytes]
	}
	var best CgroupInfo
	bestQuality := qualityNone
	podUID := ""
	for len(cgroup) > 0 {
		var line []byte
		line, cgroup, _ = bytes.Cut(cgroup, []byte{'\n'})
		// hierarchy-ID:controller-list:path; the path itself may contain ':'.
		_, rest, ok := bytes.Cut(line, []byte{':'})
		if !ok {
			continue
		}
		_, path, ok := bytes.Cut(rest, []byte{':'})
		if !ok {
			continue
		}
		info, q := parseCgroupPath(string(bytes.TrimRight(path, "\r")))
		if podUID == "" {
			podUID = info.PodUID
		}
		if q > bestQuality {
			best, bestQuality = info, q
		}
	}
	if best.PodUID == "" {
		best.PodUID = podUID
	}
	return best, bestQuality > qualityNone
}

// parseCgroupPath finds the container in one cgroup path. The shallowest ID wins: a
// nested runtime (docker-in-docker, a container's own sub-cgroups) names IDs the
// node's runtime, and so Kubernetes, knows nothing about.
func parseCgroupPath(path string) (CgroupInfo, int) {
	var info CgroupInfo
	quality := qualityNone
	inKube := strings.Contains(path, "kubepods")
	prev := ""
	afterPod := false
	for seg := range strings.SplitSeq(path, "/") {
		if seg == "" || seg == "." || seg == ".." {
			// ".." appears when the reader is in a different cgroup namespace.
			continue
		}
		if inKube && info.PodUID == "" {
			if uid, ok := podUIDFromSegment(seg); ok {
				info.PodUID = uid
				afterPod, prev = true, seg
				continue
			}
		}
		if quality == qualityNone {
			id, runtime, q := idFromSegment(seg, prev, afterPod)
			if q > qualityNone {
				info.ID, info.Runtime, quality = id, runtime, q
			}
		}
		afterPod = false
		prev = seg
	}
	return info, quality
}

// idFromSegment recognises a container ID in one path segment.
func idFromSegment(seg, parent string, afterPod bool) (id, runtime string, quality int) {
	name := strings.TrimSuffix(seg, ".scope")
	if strings.HasPrefix(name, "crio-conmon-") {
		return "", "", qualityNone
	}
	for _, rp := range runtimePrefixes {
		if id, ok := strings.CutPrefix(name, rp.prefix); ok && isContainerID(id) {
			return id, rp.runtime, qualityRuntime
		}
	}
	if !isContainerID(seg) {
		return "", "", qualityNone
	}
	switch {
	case parent == "docker":
		return seg, RuntimeDocker, qualityRuntime
	case afterPod:
		// cgroupfs driver: containerd, CRI-O and cri-dockerd all use a bare ID here.
		return seg, "", qualityUnderPod
	}
	return seg, "", qualityBare
}

func isContainerID(s string) bool {
	if len(s) != containerIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

func isLowerHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' }

// podUIDFromSegment recognises "pod<uid>" (cgroupfs driver) and
// "kubepods[-<qos>]-pod<uid>.slice" (systemd driver, where systemd forbids '-' inside a
// unit name component and the kubelet writes the UID's dashes as underscores). A UID
// is a UUID, or 32 hex characters for static pods, whose UID is a hash.
func podUIDFromSegment(seg string) (string, bool) {
	var rest string
	if r, ok := strings.CutPrefix(seg, "pod"); ok {
		rest = r
	} else if strings.HasPrefix(seg, "kubepods") && strings.HasSuffix(seg, ".slice") {
		i := strings.LastIndex(seg, "-pod")
		if i < 0 {
			return "", false
		}
		rest = strings.TrimSuffix(seg[i+len("-pod"):], ".slice")
	} else {
		return "", false
	}
	uid := strings.ReplaceAll(rest, "_", "-")
	return uid, isPodUID(uid)
}

func isPodUID(s string) bool {
	switch len(s) {
	case 32:
		for i := 0; i < len(s); i++ {
			if !isLowerHex(s[i]) {
				return false
			}
		}
		return true
	case 36:
		for i := 0; i < len(s); i++ {
			if i == 8 || i == 13 || i == 18 || i == 23 {
				if s[i] != '-' {
					return false
				}
			} else if !isLowerHex(s[i]) {
				return false
			}
		}
		return true
	}
	return false
}
