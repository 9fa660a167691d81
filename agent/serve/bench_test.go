package serve

import (
	"bufio"
	"compress/flate"
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/internal/wire"

	"github.com/go-logr/logr"
)

// BenchmarkServe serves a 1 GiB (COREDOG_BENCH_MIB to change) core-like file (60% zero pages, 25%
// text-like, 15% random) through the handler without a network, once with
// the zero pages written out and once (the "-sparse" runs) with them left as
// holes, as the kernel leaves pages it never had to write. It compresses the
// same bytes with the standard library's flate at its default level for
// comparison. Metrics: MB/s of raw input, ratio (raw/sent), peak-heap-MiB
// (HeapAlloc above the level before the benchmark, sampled every 5ms),
// cpu-s/op (user and system time of the whole process), read-MiB/op (bytes
// the process read, from /proc/self/io: holes skipped are not read).
func BenchmarkServe(b *testing.B) {
	size := int64(1 << 30)
	if v, err := strconv.Atoi(os.Getenv("COREDOG_BENCH_MIB")); err == nil && v > 0 {
		size = int64(v) << 20
	}
	dir := b.TempDir()
	p := filepath.Join(dir, "core")
	writeBenchCore(b, p, size, false)
	sparse := filepath.Join(dir, "core.sparse")
	writeBenchCore(b, sparse, size, true)
	reg := NewRegistry()
	reg.Add(entryFor(b, "core-1", p))
	reg.Add(entryFor(b, "core-sparse", sparse))
	h := NewHandler(Options{Registry: reg, Logger: logr.Discard()})

	for _, tc := range []struct {
		name, dump string
		c          wire.Compression
	}{
		{"zstd", "core-1", wire.CompressionZstd},
		{"gzip", "core-1", wire.CompressionGzip},
		{"none", "core-1", wire.CompressionNone},
		{"zstd-sparse", "core-sparse", wire.CompressionZstd},
		{"none-sparse", "core-sparse", wire.CompressionNone},
	} {
		b.Run(tc.name, func(b *testing.B) {
			measure(b, size, func() int64 {
				w := newRecorder(false)
				h.ServeHTTP(w, newGet(b, context.Background(), wire.DumpsPath+tc.dump+"?compression="+string(tc.c)))
				if w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
				return w.n
			})
		})
	}
	b.Run("stdlib-flate-default", func(b *testing.B) {
		measure(b, size, func() int64 {
			f, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var out countWriter
			fw, err := flate.NewWriter(&out, flate.DefaultCompression)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(fw, struct{ io.Reader }{f}, make([]byte, bufSize)); err != nil {
				b.Fatal(err)
			}
			if err := fw.Close(); err != nil {
				b.Fatal(err)
			}
			return out.n
		})
	})
}

func writeBenchCore(b *testing.B, path string, size int64, holes bool) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	var w io.Writer = f
	if holes {
		w = &holeWriter{f: f}
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	if err := writeCoreLike(bw, size, 42); err != nil {
		b.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// holeWriter seeks over zero pages instead of writing them. Writes must be
// page-aligned multiples of a page, as writeCoreLike's are.
type holeWriter struct{ f *os.File }

func (w *holeWriter) Write(p []byte) (int, error) {
	const page = 4096
	for i := 0; i < len(p); i += page {
		pg := p[i:min(i+page, len(p))]
		if isZero(pg) {
			if _, err := w.f.Seek(int64(len(pg)), io.SeekCurrent); err != nil {
				return i, err
			}
			continue
		}
		if _, err := w.f.Write(pg); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

func isZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}

// cpuTime is the user and system time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

func measure(b *testing.B, size int64, run func() (sent int64)) {
	b.SetBytes(size)
	b.ReportAllocs()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	var peak atomic.Uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	})

	cpuBefore, readBefore := cpuTime(b), readBytes()
	var sent int64
	for b.Loop() {
		sent = run()
	}
	cpu, read := cpuTime(b)-cpuBefore, readBytes()-readBefore
	close(stop)
	wg.Wait()
	// The machine may be busy with other work; CPU time per operation is
	// steadier than wall time and says what a download costs the node.
	b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/op")
	b.ReportMetric(float64(size)/float64(sent), "ratio")
	b.ReportMetric(float64(peak.Load()-min(base, peak.Load()))/(1<<20), "peak-heap-MiB")
	if read >= 0 {
		b.ReportMetric(float64(read)/float64(b.N)/(1<<20), "read-MiB/op")
	}
}

// readBytes is what this process has read through read(2) and friends (the
// rchar of /proc/self/io), or -1 where that is not available.
func readBytes() int64 {
	data, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return -1
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}
