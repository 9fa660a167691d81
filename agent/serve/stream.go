package serve

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
)

// zstdWindow bounds the encoder's memory per download (about 3 MiB allocated
// at 1 MiB). On core-like data 4 MiB and 8 MiB windows gained 0.2% in ratio
// for three to five times the memory, and MaxParallel encoders must fit next
// to the workloads on the node.
const zstdWindow = 1 << 20

// errRead marks a failure to read the dump, as opposed to the client going away.
var errRead = errors.New("reading core file")

// source is an open, checked core file.
type source interface {
	io.ReaderAt
	io.Seeker
	io.Closer
}

// zeroBuf stands in for holes in sparse files. It is never written.
var zeroBuf [bufSize]byte

// sink takes the raw bytes of the file: it hashes and counts them and hands
// them to the encoder.
type sink struct {
	ctx  context.Context
	hash hash.Hash
	enc  io.Writer
	n    int64
	// hashed signals that the hash has taken the current buffer.
	hashed chan struct{}
}

func (s *sink) Write(p []byte) (int, error) {
	// Holes compress to almost nothing, so a client that went away may not be
	// noticed by a write for a long time; the request context is.
	if err := s.ctx.Err(); err != nil {
		return 0, fmt.Errorf("request ended: %w", err)
	}
	// Hashing and compressing are the two costs of a download and
	// independent: run them side by side. Write returns only when both are
	// done with p, which the caller then reuses.
	if s.hashed == nil {
		s.hashed = make(chan struct{})
	}
	go func() {
		s.hash.Write(p)
		s.hashed <- struct{}{}
	}()
	n, err := s.enc.Write(p)
	<-s.hashed
	s.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("sending: %w", err)
	}
	return n, nil
}

// deadlineWriter refreshes the connection's write deadline before every write,
// so a download may last hours but no single write longer than the timeout.
// It counts what it sent and, when sum is set, hashes it.
type deadlineWriter struct {
	w           io.Writer
	rc          *http.ResponseController
	timeout     time.Duration
	noDeadlines bool
	served      prometheus.Counter
	n           int64
	sum         hash.Hash
}

func (d *deadlineWriter) refresh() {
	if d.noDeadlines {
		return
	}
	if err := d.rc.SetWriteDeadline(time.Now().Add(d.timeout)); err != nil {
		// Only a writer without deadlines (a test recorder, a proxy) gets here;
		// stop asking.
		d.noDeadlines = true
	}
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.refresh()
	n, err := d.w.Write(p)
	d.n += int64(n)
	if d.sum != nil {
		d.sum.Write(p[:n])
	}
	d.served.Add(float64(n))
	return n, err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func newEncoder(c Compression, w io.Writer) (io.WriteCloser, error) {
	switch c {
	case CompressionZstd:
		enc, err := zstd.NewWriter(w,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			// One block at a time, on the request goroutine: memory stays at
			// one window per download and a download uses at most one core.
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(zstdWindow),
		)
		if err != nil {
			return nil, fmt.Errorf("creating zstd encoder: %w", err)
		}
		return enc, nil
	case CompressionGzip:
		enc, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return nil, fmt.Errorf("creating gzip encoder: %w", err)
		}
		return enc, nil
	case CompressionNone:
		return nopCloser{w}, nil
	}
	return nil, fmt.Errorf("unknown compression %q", c)
}

// copyFile feeds the whole file into s, skipping holes where the platform can
// find them, then reading on to EOF in case the file is longer than it was
// when the walk started. Read failures wrap errRead.
func copyFile(f source, s *sink, buf []byte) error {
	off, err := copyData(f, s, buf)
	if err != nil {
		return err
	}
	_, err = copyRange(f, s, buf, off, -1)
	return err
}

// copyRange feeds the bytes from offset from up to offset to, or up to EOF
// when to < 0, in reads of at most a buffer, and returns how many bytes it
// fed. It reads nothing past to: that is where a hole starts. Reaching EOF
// early is not an error: the trailers say what was there.
func copyRange(f io.ReaderAt, s *sink, buf []byte, from, to int64) (int64, error) {
	off := from
	for to < 0 || off < to {
		b := buf
		if to >= 0 {
			b = buf[:min(int64(len(buf)), to-off)]
		}
		n, err := f.ReadAt(b, off)
		if n > 0 {
			if _, werr := s.Write(b[:n]); werr != nil {
				return off - from, werr
			}
			off += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return off - from, fmt.Errorf("%w at offset %d: %w", errRead, off, err)
		}
	}
	return off - from, nil
}
