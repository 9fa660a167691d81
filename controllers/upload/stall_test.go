package upload

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/storage"
)

func TestStallWatchStalledAt(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name     string
		progress []time.Duration // after t0
		at       time.Duration
		want     bool
	}{
		{"just started", []time.Duration{0}, time.Second, false},
		{"quiet for less than the timeout", []time.Duration{0}, time.Minute - time.Nanosecond, false},
		{"quiet for the timeout", []time.Duration{0}, time.Minute, true},
		{"progress restarts the wait", []time.Duration{0, 50 * time.Second}, 100 * time.Second, false},
		{"quiet for the timeout after progress", []time.Duration{0, 50 * time.Second}, 110 * time.Second, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := &stallWatch{timeout: time.Minute}
			for _, p := range c.progress {
				w.progress(t0.Add(p))
			}
			if got := w.stalledAt(t0.Add(c.at)); got != c.want {
				t.Errorf("stalledAt(+%s) = %v, want %v", c.at, got, c.want)
			}
		})
	}
}

// hangingStore reads a little of what it is given and then waits for its
// context, as a store whose server stopped answering would.
type hangingStore struct{ storage.Store }

func (hangingStore) Write(ctx context.Context, _ string, r io.Reader, _ storage.WriteOptions) (int64, error) {
	n, _ := io.CopyN(io.Discard, r, 16)
	<-ctx.Done()
	return n, ctx.Err()
}

func TestWatchStallGivesUpAHangingWrite(t *testing.T) {
	open := reportingProgress(func(context.Context, *storage.Location, map[string][]byte) (storage.Store, error) {
		return hangingStore{}, nil
	})
	s, err := open(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := watchStall(context.Background(), 20*time.Millisecond)
	defer stop()
	_, err = s.Write(actx, "k", bytes.NewReader(make([]byte, 64)), storage.WriteOptions{})
	err = stallError(actx, err)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "20ms") {
		t.Fatalf("a hanging write ended with %v, want the stall named", err)
	}
}

func TestWatchStallStopIsNoStall(t *testing.T) {
	actx, stop := watchStall(context.Background(), time.Hour)
	stop()
	<-actx.Done()
	if err := stallError(actx, errors.New("interrupted")); errors.Is(err, ErrStalled) || err.Error() != "interrupted" {
		t.Errorf("after stop: %v", err)
	}
	if err := stallError(actx, nil); err != nil {
		t.Errorf("a successful attempt became %v", err)
	}
	stop() // twice is harmless
}

func TestProgressIsReportedFromTheWritesSource(t *testing.T) {
	var got []byte
	open := reportingProgress(func(context.Context, *storage.Location, map[string][]byte) (storage.Store, error) {
		return recordingStore{got: &got}, nil
	})
	s, err := open(context.Background(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	actx, stop := watchStall(context.Background(), time.Hour)
	defer stop()
	w := actx.Value(stallKey{}).(*stallWatch)
	w.last.Store(0)
	if _, err := s.Write(actx, "k", strings.NewReader("core"), storage.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if string(got) != "core" {
		t.Errorf("the store read %q", got)
	}
	if w.last.Load() == 0 {
		t.Error("reading the source reported no progress")
	}
	// Outside an attempt, writes pass through untouched.
	if _, err := s.Write(context.Background(), "k", strings.NewReader("json"), storage.WriteOptions{}); err != nil || string(got) != "json" {
		t.Errorf("a write outside an attempt: %v, %q", err, got)
	}
}

type recordingStore struct {
	storage.Store
	got *[]byte
}

func (s recordingStore) Write(_ context.Context, _ string, r io.Reader, _ storage.WriteOptions) (int64, error) {
	b, err := io.ReadAll(r)
	*s.got = b
	return int64(len(b)), err
}
