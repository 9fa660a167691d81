//go:build !unix

package serve

import "errors"

// openRegistered refuses everything where O_NOFOLLOW and inode checks are
// not available; the agent runs on Linux.
func openRegistered(Entry) (source, error) {
	return nil, errors.New("serving core files is not supported on this platform")
}
