package podresolve

import "strings"

// containerIDKey returns the part of a container ID that identifies the
// container, lower-cased. Runtimes and the places an ID is read from disagree
// about the prefix (the kubelet writes "containerd://<hex>", a cgroup path
// holds only the hex, CRI-O appears as "cri-o://"), but the hex ID is the
// same everywhere, so that is what is compared.
func containerIDKey(id string) string {
	id = strings.ToLower(strings.TrimSpace(id))
	if i := strings.Index(id, "://"); i >= 0 {
		id = id[i+len("://"):]
	}
	return id
}

// sameContainerID reports whether two container IDs name the same container.
// An empty ID names nothing.
func sameContainerID(a, b string) bool {
	ka, kb := containerIDKey(a), containerIDKey(b)
	return ka != "" && ka == kb
}
