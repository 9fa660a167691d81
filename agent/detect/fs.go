package detect

// entryKind is what a directory listing found under a name.
type entryKind uint8

const (
	// entryOther: neither a regular file nor a directory (a link, a
	// device, a socket), or gone by the time it was looked at.
	entryOther entryKind = iota
	// entryRegular: a regular file, with its observation.
	entryRegular
	// entryDir: a directory.
	entryDir
	// entryError: it could not be looked at, for a reason other than that
	// it is gone.
	entryError
)

// entry is one name of a directory listing, looked at without following a
// symbolic link.
type entry struct {
	kind entryKind
	obs  observation
	err  error
}
