package analyze

import (
	"encoding/binary"
	"errors"
	"io"
	"sort"

	"github.com/coredog/coredog/agent/corefile"
)

const pageSize = 4096

// memory reads process memory from the core's PT_LOAD data a page at a time,
// keeping at most maxPages pages, so unwinding costs the pages it touches.
type memory struct {
	r     io.ReaderAt
	size  int64
	bo    binary.ByteOrder
	segs  []corefile.Segment
	pages map[uint64][]byte
	reads int
	// budget is how many pages may still be read from the file.
	budget int
}

func newMemory(r io.ReaderAt, size int64, bo binary.ByteOrder, segs []corefile.Segment, budget int) *memory {
	return &memory{r: r, size: size, bo: bo, segs: segs, pages: map[uint64][]byte{}, budget: budget}
}

var errBudget = errors.New("memory read budget spent")

// page returns the dumped bytes of the page at base (page aligned); nil when
// the core holds none there.
func (m *memory) page(base uint64) ([]byte, error) {
	if p, ok := m.pages[base]; ok {
		return p, nil
	}
	i := sort.Search(len(m.segs), func(i int) bool { return m.segs[i].Vaddr > base }) - 1
	var out []byte
	if i >= 0 {
		s := m.segs[i]
		// A segment may start or end inside the page: read what it has.
		if base >= s.Vaddr && base-s.Vaddr < s.Filesz {
			if m.budget <= 0 {
				return nil, errBudget
			}
			m.budget--
			start := base - s.Vaddr
			n := min(uint64(pageSize), s.Filesz-start)
			buf := make([]byte, n)
			got, err := m.r.ReadAt(buf, int64(s.Offset+start))
			if got < len(buf) && err != nil && !errors.Is(err, io.EOF) {
				return nil, err
			}
			m.reads++
			out = buf[:got]
		}
	}
	if len(m.pages) >= maxCachedPages {
		clear(m.pages)
	}
	m.pages[base] = out
	return out, nil
}

// read fills b with the memory at addr; false when any of it is not in the core.
func (m *memory) read(addr uint64, b []byte) bool {
	for done := 0; done < len(b); {
		a := addr + uint64(done)
		if a < addr {
			return false
		}
		p, err := m.page(a &^ (pageSize - 1))
		off := a & (pageSize - 1)
		if err != nil || off >= uint64(len(p)) {
			return false
		}
		done += copy(b[done:], p[off:])
	}
	return true
}

// word64 reads an 8-byte word at addr in the core's byte order.
func (m *memory) word64(addr uint64) (uint64, bool) {
	var b [8]byte
	if !m.read(addr, b[:]) {
		return 0, false
	}
	return m.bo.Uint64(b[:]), true
}
