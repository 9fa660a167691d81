package storage

import (
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Part buffers live outside the Go heap, in anonymous mappings kept for
// reuse. A write's part buffers are most of the manager's memory while it
// uploads, and on the heap they would also raise the garbage collector's
// goal by GOGC percent of their size (with GOGC 50, two 12 MiB parts held
// 36 MiB of heap); here they cost their touched pages and nothing more. A
// returned buffer's pages are given back at once (MADV_DONTNEED), so an
// idle manager holds none of them, and the mapping itself is never
// unmapped: net/http may still read a request body after the request
// returned, and such a late read sees zeros (or the next part), never an
// unmapped page.
var partRegions struct {
	sync.Mutex
	free   map[int][]*[]byte // by capacity
	mapped map[*byte]bool    // every mapping made, by its first byte
}

// partClass is the capacity of the mapping that holds a buffer of size
// bytes: a few sizes only, so that mappings are reused whatever sizes the
// stores ask for.
func partClass(size int) int {
	switch {
	case size <= 1<<20:
		return 1 << 20
	case size <= minPartSize:
		return minPartSize
	}
	c := 8 << 20
	for c < size {
		c <<= 1
	}
	return c
}

// getPart returns a buffer of size bytes, for putPart when it is no longer
// used. Its content is unspecified.
func getPart(size int) *[]byte {
	c := partClass(size)
	partRegions.Lock()
	if n := len(partRegions.free[c]); n > 0 {
		b := partRegions.free[c][n-1]
		partRegions.free[c] = partRegions.free[c][:n-1]
		partRegions.Unlock()
		*b = (*b)[:size]
		partsHeld.add(size)
		return b
	}
	partRegions.Unlock()
	partsHeld.add(size)
	mem, err := unix.Mmap(-1, 0, c, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		// Out of address space or mappings: the heap still works.
		b := make([]byte, size)
		return &b
	}
	partRegions.Lock()
	if partRegions.mapped == nil {
		partRegions.mapped = map[*byte]bool{}
		partRegions.free = map[int][]*[]byte{}
	}
	partRegions.mapped[unsafe.SliceData(mem)] = true
	partRegions.Unlock()
	b := mem[:size]
	return &b
}

// putPart takes back a buffer from getPart and frees its pages.
func putPart(b *[]byte) {
	partsHeld.add(-len(*b))
	full := (*b)[:cap(*b)]
	partRegions.Lock()
	mapped := partRegions.mapped[unsafe.SliceData(full)]
	partRegions.Unlock()
	if !mapped {
		return // from the heap: the collector has it
	}
	_ = unix.Madvise(full, unix.MADV_DONTNEED)
	*b = full
	partRegions.Lock()
	partRegions.free[cap(full)] = append(partRegions.free[cap(full)], b)
	partRegions.Unlock()
}
