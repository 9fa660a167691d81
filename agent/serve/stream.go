package serve

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"time"

	"github.com/coredog/coredog/internal/wire"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
)

// zstdWindow bounds the encoder's memory per download: larger windows gain
// little ratio for much more memory, and MaxParallel encoders must fit next
// to the workloads on the node (docs/decisions.md).
const zstdWindow = wire.ZstdWindow

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

// stage runs do on the buffers handed to it, one after the other, on a
// goroutine of its own, and lends them out again: the producer fills the
// next buffer while do works on the last. A download has two: the sink
// (hash and encode what was read) and, for encoded downloads, the sender
// (encrypt and write what was encoded). The first error of do, or the end
// of ctx, fails the stage; close waits for do to be done with everything.
type stage struct {
	ctx  context.Context
	do   func([]byte) error
	free chan []byte
	work chan []byte
	// failed is closed at the first error, exited when run returns; err
	// is read only after one of them is closed.
	failed chan struct{}
	exited chan struct{}
	err    error
}

// newStage starts a stage with n buffers of size bytes; the caller must call
// close.
func newStage(ctx context.Context, n, size int, do func([]byte) error) *stage {
	s := &stage{
		ctx: ctx, do: do,
		free:   make(chan []byte, n),
		work:   make(chan []byte, n),
		failed: make(chan struct{}),
		exited: make(chan struct{}),
	}
	for range n {
		s.free <- make([]byte, size)
	}
	go s.run()
	return s
}

func (s *stage) run() {
	defer close(s.exited)
	for p := range s.work {
		if s.err == nil {
			err := s.ctx.Err()
			if err != nil {
				err = fmt.Errorf("request ended: %w", err)
			} else {
				err = s.do(p)
			}
			if err != nil {
				s.err = err
				close(s.failed)
			}
		}
		if lent(p) {
			s.free <- p[:cap(p)]
		}
	}
}

// lent tells a buffer of a stage from zeroBuf, which is shared and never
// written.
func lent(p []byte) bool {
	p = p[:cap(p)]
	return len(p) > 0 && &p[0] != &zeroBuf[0]
}

// buffer lends an empty buffer, waiting for one to come back from do. It
// fails once the stage has.
func (s *stage) buffer() ([]byte, error) {
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
func (s *stage) giveBack(b []byte) { s.free <- b[:cap(b)] }

// submit hands p, a lent buffer or part of zeroBuf, to do; the caller must
// not touch it again. It returns the stage's error once it has one.
func (s *stage) submit(p []byte) error {
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

// close waits until do is done with everything handed over, and returns
// the first error.
func (s *stage) close() error {
	close(s.work)
	<-s.exited
	return s.err
}

// sinkBuffers is how many read buffers a download has: one being filled
// from the file while another is hashed and encoded.
const sinkBuffers = 2

// sink takes the raw bytes of the file in buffers of bufSize that it lends
// (buffer, then Write): it hashes and counts them and hands them to the
// encoder, hashing and encoding side by side, since they are the two costs
// of a download and independent. The file is read meanwhile.
type sink struct {
	*stage
	// n counts the bytes given to the encoder; read it after close.
	n int64
}

func newSink(ctx context.Context, sum hash.Hash, enc io.Writer) *sink {
	s := &sink{}
	hashed := make(chan struct{})
	s.stage = newStage(ctx, sinkBuffers, bufSize, func(p []byte) error {
		go func() {
			sum.Write(p)
			hashed <- struct{}{}
		}()
		n, err := enc.Write(p)
		<-hashed
		s.n += int64(n)
		if err != nil {
			return fmt.Errorf("sending: %w", err)
		}
		return nil
	})
	return s
}

// Write hands p, a buffer from s.buffer or part of zeroBuf, to the encoder.
func (s *sink) Write(p []byte) error { return s.submit(p) }

// senderBuffers and senderChunk size the sender: the encoder's output is
// gathered into chunks of senderChunk bytes, which are encrypted and
// written while the encoder goes on.
const (
	senderBuffers = 3
	senderChunk   = 256 << 10
)

// sender is an io.WriteCloser that gathers what it is given into chunks and
// writes them to w on the stage's goroutine. Close sends what is left and
// waits for w.
type sender struct {
	*stage
	cur []byte
	k   int
}

func newSender(ctx context.Context, w io.Writer) *sender {
	return &sender{stage: newStage(ctx, senderBuffers, senderChunk, func(p []byte) error {
		_, err := w.Write(p)
		return err
	})}
}

func (s *sender) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if s.cur == nil {
			b, err := s.buffer()
			if err != nil {
				return n, err
			}
			s.cur, s.k = b, 0
		}
		c := copy(s.cur[s.k:], p)
		s.k += c
		n += c
		p = p[c:]
		if s.k == len(s.cur) {
			err := s.submit(s.cur)
			s.cur = nil
			if err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Close sends the last chunk and waits until w has everything. It must be
// called once, whatever happened before.
func (s *sender) Close() error {
	var err error
	if s.cur != nil {
		if s.k > 0 {
			err = s.submit(s.cur[:s.k])
		} else {
			s.giveBack(s.cur)
		}
		s.cur = nil
	}
	if cerr := s.close(); err == nil {
		err = cerr
	}
	return err
}

// deadlineWriter refreshes the connection's write deadline before every write,
// so a download may last hours but no single write longer than the timeout.
// It counts and checksums what it sent (wire.StreamSizeTrailer,
// wire.StreamCRC32CTrailer).
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
	d.sum.Write(p[:n])
	d.served.Add(float64(n))
	return n, err
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func newEncoder(c wire.Compression, w io.Writer) (io.WriteCloser, error) {
	switch c {
	case wire.CompressionZstd:
		enc, err := zstd.NewWriter(w,
			zstd.WithEncoderLevel(zstd.SpeedFastest),
			// One block at a time on the sink's goroutine: memory stays at
			// one window per download (docs/decisions.md).
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(zstdWindow),
		)
		if err != nil {
			return nil, fmt.Errorf("creating zstd encoder: %w", err)
		}
		return enc, nil
	case wire.CompressionGzip:
		enc, err := gzip.NewWriterLevel(w, gzip.BestSpeed)
		if err != nil {
			return nil, fmt.Errorf("creating gzip encoder: %w", err)
		}
		return enc, nil
	case wire.CompressionNone:
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
