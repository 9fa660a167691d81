//go:build linux

package serve

import (
	"errors"
	"io"

	"golang.org/x/sys/unix"
)

// copyData feeds the file's data regions into s and zeros for its holes, so
// that a mostly-empty 100 GiB core costs hashing and compressing zeros but not
// 100 GiB of reads. Data is read in whole buffers, through any holes shorter
// than a buffer: a core with scattered zero pages would otherwise cost two
// seeks and a small read per page, and a short hole read from the page cache
// costs no more than feeding zeros. It returns the offset it got to; anything
// it could not walk (a filesystem without SEEK_DATA, a seek error) is left to
// the plain read from that offset.
func copyData(f source, s *sink, buf []byte) (int64, error) {
	var off int64
	for {
		data, err := f.Seek(off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			// No data at or after off: the rest, up to the current end, is a hole.
			end, err := f.Seek(0, io.SeekEnd)
			if err != nil || end <= off {
				return off, nil
			}
			if err := s.zeros(end - off); err != nil {
				return off, err
			}
			return end, nil
		}
		if err != nil || data < off {
			return off, nil
		}
		hole, err := f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return off, nil
		}
		if err := s.zeros(data - off); err != nil {
			return off, err
		}
		// At least one buffer, so that a file changing under the walk (a
		// hole punched between the two seeks) cannot stall it.
		n, err := copyRange(f, s, buf, data, max(hole, data+1))
		off = data + n
		if err != nil || off < hole {
			// Stopping short of the hole means EOF came early: the file
			// shrank, and the plain read from off finds the new end.
			return off, err
		}
	}
}
