package corefile

import (
	"bytes"
	"debug/elf"
	"math"
	"os"
	"testing"
)

func declared(b []byte) (int64, bool) { return DeclaredSize(bytes.NewReader(b), int64(len(b))) }

// TestDeclaredSizeOfPrefixes cuts cores at every interesting place: each
// prefix, however short, declares the whole core's size, as the kernel's
// core does while it is being written.
func TestDeclaredSizeOfPrefixes(t *testing.T) {
	for _, tc := range []struct {
		name string
		core []byte
	}{
		{"x86-64", synthX86().bytes()},
		{"arm64", synthARM64().bytes()},
		{"i386", synth386().bytes()},
	} {
		full := int64(len(tc.core))
		hsize, phsize := 64, 56
		if tc.core[elf.EI_CLASS] == byte(elf.ELFCLASS32) {
			hsize, phsize = 52, 32
		}
		phEnd := hsize + phsize*int(le.Uint16(tc.core[hsize-8:]))
		if hsize == 52 {
			phEnd = hsize + phsize*int(le.Uint16(tc.core[44:]))
		}
		// Once the program headers are all there, the size is known.
		for _, cut := range []int{phEnd, phEnd + 3, len(tc.core) / 2, len(tc.core) - 1, len(tc.core)} {
			got, ok := declared(tc.core[:cut])
			if !ok || got != full {
				t.Errorf("%s cut at %d of %d: DeclaredSize = %d, %v; want %d, true", tc.name, cut, full, got, ok, full)
			}
		}
		// Before that, it is at least more than there is.
		for _, cut := range []int{0, 1, 4, 5, 17, 18, hsize - 1, hsize, hsize + 1, hsize + phsize, phEnd - 1} {
			got, ok := declared(tc.core[:cut])
			if !ok || got <= int64(cut) || got > full {
				t.Errorf("%s cut at %d, before the program headers end at %d: DeclaredSize = %d, %v; want more than there is, true", tc.name, cut, phEnd, got, ok)
			}
		}
	}
}

func TestDeclaredSize(t *testing.T) {
	core := synthX86().bytes()
	full := int64(len(core))
	// Program header 1 is the first PT_LOAD: its p_offset is at 64+56+8,
	// its p_filesz at 64+56+32.
	load1 := 64 + 56
	for _, tc := range []struct {
		name   string
		in     []byte
		want   int64
		wantOK bool
	}{
		{"complete core", core, full, true},
		{"empty file: a core the kernel has not begun", nil, elfHeader32, true},
		{"a segment that ends past the file", patch(core, load1+32, 1<<30, 8), int64(le.Uint64(core[load1+8:])) + 1<<30, true},
		{"a segment that claims the most a file can have", patch(core, load1+32, math.MaxUint64-le.Uint64(core[load1+8:]), 8), math.MaxInt64, true},
		{"a segment whose end overflows is not counted", patch(core, load1+32, math.MaxUint64, 8), full, true},
		{"text", []byte("not a core\n"), 0, false},
		{"text after the magic", []byte("\x7fELF-not-really"), 0, false},
		{"text after the magic, longer than a header", append([]byte("\x7fELF detected core"), make([]byte, 100)...), 0, false},
		{"unknown byte order", patch(core, elf.EI_DATA, 9, 2)[:20], 0, false},
		{"an executable, not a core", patch(core, 16, uint64(elf.ET_EXEC), 2), 0, false},
		{"an executable's first 18 bytes", patch(core, 16, uint64(elf.ET_EXEC), 2)[:18], 0, false},
		{"program headers not after the ELF header", patch(core, 32, 128, 8), 0, false},
		{"no program headers", patch(core, 56, 0, 2), 64, true},
	} {
		got, ok := declared(tc.in)
		if got != tc.want || ok != tc.wantOK {
			t.Errorf("%s: DeclaredSize = %d, %v; want %d, %v", tc.name, got, ok, tc.want, tc.wantOK)
		}
	}
}

// TestDeclaredSizeReal: a real crash's core declares exactly its size, and
// its first half declares the same.
func TestDeclaredSizeReal(t *testing.T) {
	full, err := os.ReadFile(cCore(t).core)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{len(full), len(full) / 2} {
		if got, ok := declared(full[:cut]); !ok || got != int64(len(full)) {
			t.Errorf("cut at %d of %d: DeclaredSize = %d, %v", cut, len(full), got, ok)
		}
	}
}

func TestDeclaredSizeReaderError(t *testing.T) {
	if got, ok := DeclaredSize(failingReader{bytes.NewReader(nil), 0}, 4096); ok {
		t.Errorf("DeclaredSize of an unreadable file = %d, true", got)
	}
	core := synthX86().bytes()
	if got, ok := DeclaredSize(failingReader{bytes.NewReader(core), 64}, int64(len(core))); ok {
		t.Errorf("DeclaredSize with unreadable program headers = %d, true", got)
	}
}
