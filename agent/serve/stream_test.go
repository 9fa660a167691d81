package serve

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"sync/atomic"
	"testing"
)

// failAfter accepts limit bytes, then fails every write.
type failAfter struct {
	buf   bytes.Buffer
	limit int
	calls atomic.Int64
}

var errPeerGone = errors.New("peer gone")

func (f *failAfter) Write(p []byte) (int, error) {
	f.calls.Add(1)
	if f.limit >= 0 && f.buf.Len()+len(p) > f.limit {
		return 0, errPeerGone
	}
	return f.buf.Write(p)
}

func TestSender(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*senderChunk+12345)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for _, tc := range []struct {
		name    string
		writes  []int // sizes of the writes, repeated until data is used up
		limit   int   // the writer fails past this many bytes; -1 never
		wantErr error
	}{
		{name: "one byte at a time", writes: []int{1}, limit: -1},
		{name: "block-sized writes", writes: []int{128 << 10, 7, 3 << 10}, limit: -1},
		{name: "writes larger than a chunk", writes: []int{senderChunk + 1, 2 * senderChunk}, limit: -1},
		{name: "exactly chunks", writes: []int{senderChunk}, limit: -1},
		{name: "the peer goes away", writes: []int{4 << 10}, limit: senderChunk + 10, wantErr: errPeerGone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &failAfter{limit: tc.limit}
			s := newSender(context.Background(), w)
			var werr error
			for off, i := 0, 0; off < len(data) && werr == nil; i++ {
				n := min(tc.writes[i%len(tc.writes)], len(data)-off)
				var m int
				m, werr = s.Write(data[off : off+n])
				if werr == nil && m != n {
					t.Fatalf("Write took %d of %d bytes without an error", m, n)
				}
				off += n
			}
			cerr := s.Close()
			if tc.wantErr != nil {
				if !errors.Is(werr, tc.wantErr) && !errors.Is(cerr, tc.wantErr) {
					t.Fatalf("Write error %v, Close error %v; want %v from one of them", werr, cerr, tc.wantErr)
				}
				// The first failure stops the stage: nothing is written after it.
				if calls := w.calls.Load(); calls != 2 {
					t.Fatalf("the writer was called %d times; want 2 (one chunk, then the failure)", calls)
				}
				return
			}
			if werr != nil || cerr != nil {
				t.Fatalf("Write error %v, Close error %v", werr, cerr)
			}
			if !bytes.Equal(w.buf.Bytes(), data) {
				t.Fatalf("the writer got %d bytes that differ from the %d written", w.buf.Len(), len(data))
			}
			// Everything but the last chunk went out whole.
			if want := int64((len(data) + senderChunk - 1) / senderChunk); w.calls.Load() != want {
				t.Fatalf("the writer was called %d times; want %d chunks", w.calls.Load(), want)
			}
		})
	}
}

func TestSenderStopsWithTheRequest(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &failAfter{limit: -1}
	s := newSender(ctx, w)
	if _, err := s.Write(make([]byte, senderChunk)); err != nil {
		t.Fatal(err)
	}
	cancel()
	_, werr := s.Write(make([]byte, 2*senderChunk))
	cerr := s.Close()
	if !errors.Is(werr, context.Canceled) && !errors.Is(cerr, context.Canceled) {
		t.Fatalf("Write error %v, Close error %v; want the request's end", werr, cerr)
	}
	if w.buf.Len() > senderChunk {
		t.Fatalf("%d bytes were written after the request ended", w.buf.Len()-senderChunk)
	}
}

// TestSinkKeepsOrderAndCounts feeds buffers and zero runs through the sink
// and checks the encoder saw them in order, the hash saw the same bytes, and
// the buffers came back to be lent again.
func TestSinkKeepsOrderAndCounts(t *testing.T) {
	var enc bytes.Buffer
	sum := newTestHash()
	s := newSink(context.Background(), sum, &enc)
	var want bytes.Buffer
	for i := range 10 {
		b, err := s.buffer()
		if err != nil {
			t.Fatal(err)
		}
		n := 1000 + i
		for j := range n {
			b[j] = byte(i + j)
		}
		want.Write(b[:n])
		if err := s.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			if err := s.Write(zeroBuf[:]); err != nil {
				t.Fatal(err)
			}
			want.Write(zeroBuf[:])
		}
	}
	if err := s.close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(enc.Bytes(), want.Bytes()) {
		t.Fatal("the encoder got other bytes than those written, or in another order")
	}
	if !bytes.Equal(sum.Bytes(), want.Bytes()) {
		t.Fatal("the hash got other bytes than the encoder")
	}
	if s.n != int64(want.Len()) {
		t.Fatalf("n = %d, want %d", s.n, want.Len())
	}
	if len(s.free) != sinkBuffers {
		t.Fatalf("%d of %d buffers came back", len(s.free), sinkBuffers)
	}
}

// testHash records what it is given.
type testHash struct{ bytes.Buffer }

func newTestHash() *testHash                    { return &testHash{} }
func (h *testHash) Sum(b []byte) []byte         { return append(b, h.Bytes()...) }
func (h *testHash) Size() int                   { return 0 }
func (h *testHash) BlockSize() int              { return 1 }
func (h *testHash) Reset()                      { h.Buffer.Reset() }
func (h *testHash) Write(p []byte) (int, error) { return h.Buffer.Write(p) }
