package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coredog/coredog/internal/storage"
)

// DefaultStallTimeout is how long an upload attempt may go without
// progress before it is given up and retried. Progress is a read from the
// dump's stream, which the store paces: it reads the next part while one
// uploads. Neither the S3 client nor the agent client bounds a request's
// duration (a dump may take hours), so a store that accepts a request and
// never answers, or stops reading its body, or an agent that stops sending,
// would otherwise hold the attempt, and one of the --max-concurrent-uploads
// slots, for ever. Two minutes let one part (5 to 8 MiB) take that long: an
// upload's share of the link may drop to about 70 KB/s.
const DefaultStallTimeout = 2 * time.Minute

// ErrStalled is the cause of an upload attempt given up for lack of
// progress.
var ErrStalled = errors.New("the upload made no progress")

type stallKey struct{}

// stallWatch is the progress of one upload attempt.
type stallWatch struct {
	timeout time.Duration
	// last is the UnixNano time of the last progress.
	last atomic.Int64
}

func (w *stallWatch) progress(now time.Time) { w.last.Store(now.UnixNano()) }

// stalledAt reports whether the attempt has gone timeout without progress at now.
func (w *stallWatch) stalledAt(now time.Time) bool {
	return now.Sub(time.Unix(0, w.last.Load())) >= w.timeout
}

// watchStall returns the context for one upload attempt: it is cancelled,
// with a cause wrapping ErrStalled, once no write into storage has
// read from its source for timeout. stop ends the watch and the context.
func watchStall(ctx context.Context, timeout time.Duration) (actx context.Context, stop func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &stallWatch{timeout: timeout}
	w.progress(time.Now())
	done := make(chan struct{})
	go func() {
		tick := time.NewTicker(max(timeout/8, 10*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-tick.C:
				if w.stalledAt(now) {
					cancel(fmt.Errorf("%w for %s", ErrStalled, timeout))
					return
				}
			}
		}
	}()
	var once sync.Once
	return context.WithValue(ctx, stallKey{}, w), func() {
		once.Do(func() {
			close(done)
			cancel(context.Canceled)
		})
	}
}

// stallError names the stall when it is what ended an attempt.
func stallError(actx context.Context, err error) error {
	if cause := context.Cause(actx); err != nil && errors.Is(cause, ErrStalled) {
		return fmt.Errorf("%w: %v", cause, err)
	}
	return err
}

// reportingProgress makes the stores open returns report each read of a
// written object's source as progress of the upload attempt whose context
// the write carries (see watchStall).
func reportingProgress(open OpenStoreFunc) OpenStoreFunc {
	return func(ctx context.Context, loc *storage.Location, creds map[string][]byte) (storage.Store, error) {
		s, err := open(ctx, loc, creds)
		if err != nil {
			return nil, err
		}
		return progressStore{s}, nil
	}
}

type progressStore struct{ storage.Store }

func (s progressStore) Write(ctx context.Context, key string, r io.Reader, o storage.WriteOptions) (int64, error) {
	if w, ok := ctx.Value(stallKey{}).(*stallWatch); ok {
		r = &progressReader{r: r, w: w}
	}
	return s.Store.Write(ctx, key, r, o)
}

type progressReader struct {
	r io.Reader
	w *stallWatch
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.w.progress(time.Now())
	}
	return n, err
}
