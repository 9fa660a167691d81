//go:build linux

package serve

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/sys/unix"
)

// copyData feeds the file's data regions into s and zeros for its holes, so
// that a mostly-empty 100 GiB core costs hashing and compressing zeros but not
// 100 GiB of reads. Each data region is read exactly, up to the hole after
// it, and holes are cleared in the buffer instead, since a hole read costs
// the kernel zeroing page-cache pages (docs/decisions.md). Data and zeros
// share the buffer, which goes to s only when full, so scattered zero pages
// cost two seeks each but never a small write. It returns the offset it got
// to; anything it could not walk (a filesystem without SEEK_DATA, a seek
// error) is left to the plain read from that offset.
func copyData(f source, s *sink) (int64, error) {
	w := &regionWriter{f: f, s: s}
	err := w.walk()
	if ferr := w.flush(); err == nil {
		err = ferr
	}
	if w.buf != nil {
		s.giveBack(w.buf)
	}
	return w.off, err
}

// regionWriter fills buf, a buffer lent by s, from the file's data and holes
// in file order; buf[:k] holds the bytes just before off, not yet fed to s.
// buf is nil between a flush and the next byte.
type regionWriter struct {
	f   source
	s   *sink
	buf []byte
	k   int
	off int64
}

func (w *regionWriter) walk() error {
	for {
		data, err := w.f.Seek(w.off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			// No data at or after off: the rest, up to the current end, is a hole.
			end, err := w.f.Seek(0, io.SeekEnd)
			if err != nil || end <= w.off {
				return nil
			}
			return w.zeros(end - w.off)
		}
		if err != nil || data < w.off {
			return nil
		}
		hole, err := w.f.Seek(data, unix.SEEK_HOLE)
		if err != nil {
			return nil
		}
		if err := w.zeros(data - w.off); err != nil {
			return err
		}
		// At least one byte, so that a file changing under the walk (a
		// hole punched between the two seeks) cannot stall it.
		eof, err := w.read(max(hole, data+1))
		if err != nil || eof {
			// EOF before the hole means the file shrank; the plain read
			// from off finds the new end.
			return err
		}
	}
}

// zeros adds n zero bytes, a hole that is not read from disk.
func (w *regionWriter) zeros(n int64) error {
	for n > 0 {
		if w.k == 0 && n >= int64(len(zeroBuf)) {
			if err := w.s.Write(zeroBuf[:]); err != nil {
				return err
			}
			w.off += int64(len(zeroBuf))
			n -= int64(len(zeroBuf))
			continue
		}
		if err := w.lend(); err != nil {
			return err
		}
		c := int(min(n, int64(len(w.buf)-w.k)))
		clear(w.buf[w.k : w.k+c])
		w.k += c
		w.off += int64(c)
		n -= int64(c)
		if err := w.flushFull(); err != nil {
			return err
		}
	}
	return nil
}

// read adds the file's bytes from off up to to and reports whether EOF came
// first.
func (w *regionWriter) read(to int64) (bool, error) {
	for w.off < to {
		if err := w.lend(); err != nil {
			return false, err
		}
		c := int(min(to-w.off, int64(len(w.buf)-w.k)))
		n, err := w.f.ReadAt(w.buf[w.k:w.k+c], w.off)
		w.k += n
		w.off += int64(n)
		if ferr := w.flushFull(); ferr != nil {
			return false, ferr
		}
		if errors.Is(err, io.EOF) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("%w at offset %d: %w", errRead, w.off, err)
		}
	}
	return false, nil
}

// lend takes a buffer from s when w has none.
func (w *regionWriter) lend() error {
	if w.buf != nil {
		return nil
	}
	b, err := w.s.buffer()
	w.buf, w.k = b, 0
	return err
}

func (w *regionWriter) flushFull() error {
	if w.buf == nil || w.k < len(w.buf) {
		return nil
	}
	return w.flush()
}

// flush hands the filled part of buf to s, which keeps the buffer.
func (w *regionWriter) flush() error {
	if w.k == 0 {
		return nil
	}
	err := w.s.Write(w.buf[:w.k])
	w.buf, w.k = nil, 0
	return err
}
