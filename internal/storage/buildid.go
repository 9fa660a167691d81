package storage

import "strings"

// The files of a dump's modules are stored once per build-id, in the
// layout of a debuginfod server, under the location's prefix:
// buildid/<BUILD-ID>/executable (the file as it was mapped) and
// buildid/<BUILD-ID>/debuginfo (its separate debug info, when there was
// one). The manager writes them; kubectl coredog debuginfod serves them.
const (
	BuildIDExecutable = "executable"
	BuildIDDebuginfo  = "debuginfo"
)

// Bounds of a build-id in hex: GNU build-ids are 20 bytes (SHA-1) by
// default, 16 (MD5, UUID) or 8 (xxhash) with other --build-id styles; the
// CRD allows 128 hex digits.
const (
	MinBuildIDHex = 8
	MaxBuildIDHex = 128
)

// NormalBuildID is id in lower case, and whether it is a build-id: an even
// number of hex digits, between MinBuildIDHex and MaxBuildIDHex.
func NormalBuildID(id string) (string, bool) {
	if len(id) < MinBuildIDHex || len(id) > MaxBuildIDHex || len(id)%2 != 0 {
		return "", false
	}
	id = strings.ToLower(id)
	for _, c := range id {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return id, true
}

// BuildIDKey is the key (before the location's prefix) of a module's file:
// kind is BuildIDExecutable or BuildIDDebuginfo. ok is false when id is
// not a build-id or kind is neither.
func BuildIDKey(id, kind string) (key string, ok bool) {
	id, ok = NormalBuildID(id)
	if !ok || (kind != BuildIDExecutable && kind != BuildIDDebuginfo) {
		return "", false
	}
	return "buildid/" + id + "/" + kind, true
}
