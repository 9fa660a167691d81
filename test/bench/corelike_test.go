package bench

import (
	"compress/flate"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"syscall"
	"time"
)

// Core-like files: a real core is its process's memory map written out
// region by region. Untouched and freed memory is zero pages, which the
// kernel leaves as holes; mapped files and string-heavy data are text-like;
// an application heap is closer to random. The generator lays the file out
// as regions of 64 KiB to 2 MiB, each zero (60% of regions), text-like (25%:
// symbol names, paths, log lines) or random (15%), after an ELF-looking
// first page. Sparse files leave the zero regions as holes; dense files
// write them.
const (
	pageSize       = 4096
	minRegionPages = 16
	maxRegionPages = 512
)

type regionKind int

const (
	regionZero regionKind = iota
	regionText
	regionRandom
)

var words = []string{
	"GLIBC_2.34\x00", "/usr/lib/x86_64-linux-gnu/libc.so.6\x00", "malloc\x00", "pthread_create\x00", "HOME=/root\x00",
	`{"level":"info","ts":1767225600.123,"msg":"request served","path":"/api/v1/items","status":200}` + "\n",
	"0x00007ffd", "SIGSEGV", "libstdc++.so.6\x00", "main.go:42 ", "runtime.goexit", "\x00\x00\x00\x00\x01\x00\x00\x00",
}

// coreStats says what a generated file holds.
type coreStats struct {
	size, zeroBytes, textBytes, randomBytes int64
	// allocated is the file's disk usage (st_blocks), which shows the holes.
	allocated int64
}

// writeCoreLike writes a core-like file of size bytes at path. The same seed
// gives the same bytes, sparse or dense.
func writeCoreLike(path string, size int64, sparse bool, seed uint64) (coreStats, error) {
	st := coreStats{size: size}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return st, err
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	var chachaSeed [32]byte
	chachaSeed[0], chachaSeed[1] = byte(seed), byte(seed>>8)
	random := rand.NewChaCha8(chachaSeed)
	buf := make([]byte, maxRegionPages*pageSize)
	zero := make([]byte, maxRegionPages*pageSize)

	var off int64
	write := func(p []byte) error {
		_, err := f.WriteAt(p, off)
		off += int64(len(p))
		return err
	}
	// The ELF header and notes: one text-like page.
	first := buf[:min(pageSize, size)]
	fillText(first, rng)
	copy(first, "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04\x00\x3e\x00")
	if err := write(first); err != nil {
		return st, err
	}
	st.textBytes += int64(len(first))
	for off < size {
		n := int64(minRegionPages+rng.IntN(maxRegionPages-minRegionPages+1)) * pageSize
		n = min(n, size-off)
		region := buf[:n]
		kind := regionRandom
		switch r := rng.IntN(100); {
		case r < 60:
			kind = regionZero
		case r < 85:
			kind = regionText
		}
		switch kind {
		case regionZero:
			st.zeroBytes += n
			if sparse {
				off += n
				continue
			}
			if err := write(zero[:n]); err != nil {
				return st, err
			}
			continue
		case regionText:
			st.textBytes += n
			fillText(region, rng)
		case regionRandom:
			st.randomBytes += n
			_, _ = random.Read(region)
		}
		if err := write(region); err != nil {
			return st, err
		}
	}
	if err := f.Truncate(size); err != nil {
		return st, err
	}
	// On disk before any clock starts: otherwise the kernel writes back
	// the benchmark's own setup (up to 4 GiB of dirty pages) during the
	// measurement, on the same two cores.
	if err := f.Sync(); err != nil {
		return st, err
	}
	if err := f.Close(); err != nil {
		return st, err
	}
	var sys syscall.Stat_t
	if err := syscall.Stat(path, &sys); err == nil {
		st.allocated = sys.Blocks * 512
	}
	return st, nil
}

func fillText(p []byte, rng *rand.Rand) {
	for i := 0; i < len(p); {
		i += copy(p[i:], words[rng.IntN(len(words))])
	}
}

// peerResult is the same bytes through the standard library's Deflate at
// its default level, the method of the collector the targets compare with.
type peerResult struct {
	Size     int64
	Seconds  float64
	CPU      float64
	Out      int64
	MiBps    float64
	Ratio    float64
	Measured time.Time
}

// flatePeer compresses the file at path with compress/flate at
// DefaultCompression on one goroutine, reading it in 1 MiB pieces as the
// agent does, and discards the output.
func flatePeer(path string) (peerResult, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := os.Open(path)
	if err != nil {
		return peerResult{}, err
	}
	defer f.Close()
	var out countWriter
	fw, err := flate.NewWriter(&out, flate.DefaultCompression)
	if err != nil {
		return peerResult{}, err
	}
	cpu0 := threadCPU()
	start := time.Now()
	n, err := io.CopyBuffer(fw, struct{ io.Reader }{f}, make([]byte, 1<<20))
	if err != nil {
		return peerResult{}, err
	}
	if err := fw.Close(); err != nil {
		return peerResult{}, err
	}
	d := time.Since(start)
	r := peerResult{Size: n, Seconds: d.Seconds(), CPU: (threadCPU() - cpu0).Seconds(), Out: out.n, Measured: start}
	r.MiBps = mibOf(n) / d.Seconds()
	if out.n > 0 {
		r.Ratio = float64(n) / float64(out.n)
	}
	if n == 0 {
		return r, fmt.Errorf("%s is empty", path)
	}
	return r, nil
}

// threadCPU is the calling thread's CPU time (the caller locks its thread).
func threadCPU() time.Duration {
	var ru syscall.Rusage
	const rusageThread = 1
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}
