package corefile

import (
	"debug/elf"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/coredog/coredog/test/testcrash"
)

// readelfID is the outside oracle: binutils' reading of a file's notes.
func readelfID(t *testing.T, path string) string { return testcrash.ReadelfBuildID(t, path) }

// TestModulesOfRealCores lists the modules of real kernel-written cores
// (a dynamically linked C program: itself, the C library, the dynamic
// loader; a Go program) and checks each build-id against readelf -n of the
// file on disk, and each address range against the core's own mappings.
func TestModulesOfRealCores(t *testing.T) {
	for _, tc := range []struct {
		name string
		get  func(testing.TB) crash
		min  int
	}{{"C", cCore, 3}, {"Go", goCore, 1}} {
		t.Run(tc.name, func(t *testing.T) {
			cr := tc.get(t)
			c, err := readCoreFile(t, cr.core)
			if err != nil {
				t.Fatalf("ReadCore: %v", err)
			}
			if len(c.Modules) < tc.min {
				t.Fatalf("%d modules, want at least %d: %+v", len(c.Modules), tc.min, c.Modules)
			}
			seen := map[string]bool{}
			var libc, prog bool
			for i, m := range c.Modules {
				if seen[m.Path] {
					t.Errorf("module %s listed twice", m.Path)
				}
				seen[m.Path] = true
				if i > 0 && m.Start < c.Modules[i-1].Start {
					t.Errorf("modules not in address order at %s", m.Path)
				}
				want := readelfID(t, m.Path)
				if m.BuildID != want {
					t.Errorf("%s: build-id %q, readelf -n says %q", m.Path, m.BuildID, want)
				}
				var lo, hi uint64
				for _, mp := range c.Mappings {
					if mp.Path == m.Path {
						if lo == 0 || mp.Start < lo {
							lo = mp.Start
						}
						hi = max(hi, mp.End)
					}
				}
				if m.Start != lo || m.End != hi || m.Mapping.Path != m.Path || m.Mapping.FileOffset != 0 {
					t.Errorf("%s: range %#x-%#x (mapping %+v), its mappings span %#x-%#x", m.Path, m.Start, m.End, m.Mapping, lo, hi)
				}
				libc = libc || strings.Contains(m.Path, "libc.so")
				prog = prog || m.Path == realPath(t, cr.prog)
				t.Logf("%s %#x-%#x %s", m.Path, m.Start, m.End, m.BuildID)
			}
			if !prog || (tc.name == "C" && !libc) {
				t.Errorf("program listed %v, C library listed %v", prog, libc)
			}
		})
	}
}

// TestModulesAreBounded: a core that maps more ELF files than MaxModules
// keeps the MaxModules lowest and says it hit a limit; files that are not
// ELF (the first page does not start with the magic) are not modules.
func TestModulesAreBounded(t *testing.T) {
	page := moduleHeaderPage(synthBuildID)
	var maps []Mapping
	var loads []synthLoad
	for i := range MaxModules + 10 {
		start := 0x100000 + uint64(i)*0x10000
		maps = append(maps, Mapping{Start: start, End: start + 0x1000, Path: fmt.Sprintf("/lib/m%d.so", i)})
		loads = append(loads, synthLoad{vaddr: start, data: page})
	}
	maps = append(maps, Mapping{Start: 0x10, End: 0x1010, Path: "/usr/lib/locale/locale-archive"})
	loads = append(loads, synthLoad{vaddr: 0x10, data: make([]byte, 0x1000)})
	core := synthCore{machine: elf.EM_X86_64, notes: []synthNote{{"CORE", ntFile, fileNote(false, maps)}}, loads: loads}.bytes()
	c, err := readBytes(core)
	if len(c.Modules) != MaxModules {
		t.Fatalf("%d modules, want %d", len(c.Modules), MaxModules)
	}
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "modules") {
		t.Errorf("err = %v, want the modules limit named", err)
	}
	for i, m := range c.Modules {
		if want := fmt.Sprintf("/lib/m%d.so", i); m.Path != want || m.BuildID != synthBuildIDHex {
			t.Fatalf("module %d: %s %q, want %s with the build-id", i, m.Path, m.BuildID, want)
		}
	}
}
