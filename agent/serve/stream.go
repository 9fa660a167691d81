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

// sinkBuffers is how many read buffers a download has: one being filled
// from the file while another is hashed and compressed.
const sinkBuffers = 2

// sink takes the raw bytes of the file: it hashes and counts them and hands
// them to the encoder. Reading, hashing and compressing run side by side:
// the reader fills a buffer lent by buffer and hands it over with Write, and
// a goroutine of the sink hashes it on one goroutine and encodes it on
// another, then lends it again. Reads then cost no wall time when the CPU
// has room, and a download uses up to two cores.
type sink struct {
	ctx  context.Context
	hash hash.Hash
	enc  io.Writer
	// n counts the bytes given to enc; read it after close.
	n    int64
	free chan []byte
	work chan []byte
	// failed is closed at the first error, exited when run returns; err
	// is read only after one of them is closed.
	failed chan struct{}
	exited chan struct{}
	err    error
}

// newSink starts the sink's goroutine; the caller must call close.
func newSink(ctx context.Context, sum hash.Hash, enc io.Writer) *sink {
	s := &sink{
		ctx: ctx, hash: sum, enc: enc,
		free:   make(chan []byte, sinkBuffers),
		work:   make(chan []byte, sinkBuffers),
		failed: make(chan struct{}),
		exited: make(chan struct{}),
	}
	for range sinkBuffers {
		s.free <- make([]byte, bufSize)
	}
	go s.run()
	return s
}

func (s *sink) run() {
	defer close(s.exited)
	hashed := make(chan struct{})
	for p := range s.work {
		if s.err == nil {
			if err := s.encode(p, hashed); err != nil {
				s.err = err
				close(s.failed)
			}
		}
		if lent(p) {
			s.free <- p[:cap(p)]
		}
	}
}

// encode hashes p and encodes it, side by side: the two costs of a download
// are independent.
func (s *sink) encode(p []byte, hashed chan struct{}) error {
	// Holes compress to almost nothing, so a client that went away may not be
	// noticed by a write for a long time; the request context is.
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("request ended: %w", err)
	}
	go func() {
		s.hash.Write(p)
		hashed <- struct{}{}
	}()
	n, err := s.enc.Write(p)
	<-hashed
	s.n += int64(n)
	if err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	return nil
}

// lent tells a buffer of the sink from zeroBuf, which is shared and never
// written.
func lent(p []byte) bool {
	p = p[:cap(p)]
	return len(p) > 0 && &p[0] != &zeroBuf[0]
}

// buffer lends an empty buffer of bufSize bytes, waiting for one to come
// back from the encoder. It fails once the sink has.
func (s *sink) buffer() ([]byte, error) {
	select {
	case b := <-s.free:
		return b, nil
	case <-s.failed:
		return nil, s.err
	case <-s.ctx.Done():
		return nil, fmt.Errorf("request ended: %w", s.ctx.Err())
	}
}

// giveBack returns a lent buffer that was not filled.
func (s *sink) giveBack(b []byte) { s.free <- b[:cap(b)] }

// Write hands p, a lent buffer or part of zeroBuf, to the encoder; the caller
// must not touch it again. It returns the sink's error once it has one.
func (s *sink) Write(p []byte) error {
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("request ended: %w", err)
	}
	select {
	case s.work <- p:
		return nil
	case <-s.failed:
		return s.err
	}
}

// close waits until everything handed over is hashed and encoded, and
// returns the first error.
func (s *sink) close() error {
	close(s.work)
	<-s.exited
	return s.err
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
func copyFile(f source, s *sink) error {
	off, err := copyData(f, s)
	if err != nil {
		return err
	}
	_, err = copyRange(f, s, off, -1)
	return err
}

// copyRange feeds the bytes from offset from up to offset to, or up to EOF
// when to < 0, in reads of at most a buffer, and returns how many bytes it
// fed. It reads nothing past to: that is where a hole starts. Reaching EOF
// early is not an error: the trailers say what was there.
func copyRange(f io.ReaderAt, s *sink, from, to int64) (int64, error) {
	off := from
	for to < 0 || off < to {
		b, err := s.buffer()
		if err != nil {
			return off - from, err
		}
		if to >= 0 {
			b = b[:min(int64(len(b)), to-off)]
		}
		n, err := f.ReadAt(b, off)
		if n > 0 {
			if werr := s.Write(b[:n]); werr != nil {
				return off - from, werr
			}
			off += int64(n)
		} else {
			s.giveBack(b)
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
