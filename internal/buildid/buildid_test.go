package buildid_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/test/testcrash"
)

// readelf is the oracle: binutils' own reading of the build-id note.
func readelf(t *testing.T, path string) string {
	t.Helper()
	id := testcrash.ReadelfBuildID(t, path)
	if id == "" {
		t.Fatalf("readelf found no build-id in %s", path)
	}
	return id
}

func readFile(t *testing.T, path string) (info buildid.Info, err error) {
	t.Helper()
	testcrash.WithFile(t, path, func(r io.ReaderAt, size int64) { info, err = buildid.Read(r, size) })
	return info, err
}

// TestReadAgreesWithReadelf reads real binaries: a C program with and
// without DWARF, the C library, and a Go binary (whose build-id note lies
// outside PT_NOTE).
func TestReadAgreesWithReadelf(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "p.c")
	if err := os.WriteFile(src, []byte("int main(void){return 0;}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	withDWARF, stripped := filepath.Join(dir, "g"), filepath.Join(dir, "s")
	for _, args := range [][]string{{"-g", "-o", withDWARF}, {"-s", "-o", stripped}} {
		if out, err := exec.Command("gcc", append(append([]string{}, args...), "-Wl,--build-id", src)...).CombinedOutput(); err != nil {
			t.Fatalf("gcc: %v\n%s", err, out)
		}
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no go binary: %v", err)
	}
	if gobin, err = filepath.EvalSymlinks(gobin); err != nil {
		t.Fatal(err)
	}
	libc, err := filepath.EvalSymlinks("/lib/x86_64-linux-gnu/libc.so.6")
	if err != nil {
		libc, err = filepath.EvalSymlinks("/lib/aarch64-linux-gnu/libc.so.6")
	}
	if err != nil {
		t.Fatalf("no C library found: %v", err)
	}
	for _, tc := range []struct {
		path  string
		debug bool
	}{{withDWARF, true}, {stripped, false}, {libc, false}, {gobin, false}} {
		t.Run(filepath.Base(tc.path), func(t *testing.T) {
			info, err := readFile(t, tc.path)
			if err != nil {
				t.Fatal(err)
			}
			if want := readelf(t, tc.path); info.ID != want {
				t.Errorf("ID = %s, readelf says %s", info.ID, want)
			}
			if tc.path != gobin && info.DebugInfo != tc.debug {
				t.Errorf("DebugInfo = %v, want %v", info.DebugInfo, tc.debug)
			}
			b := mustRead(t, tc.path)
			if _, err := buildid.Verify(bytes.NewReader(b), int64(len(b)), strings.Repeat("ab", 20)); !errors.Is(err, buildid.ErrMismatch) {
				t.Errorf("Verify against another build-id = %v, want ErrMismatch", err)
			}
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"15dfff3239aa7c3b16a71e6b2e3b6e4009dab998", true},
		{"0123456789abcdef", true},
		{"", false},
		{"abc", false},
		{"0123456", false},
		{"15DFFF3239AA7C3B", false},
		{"../../etc/passwd", false},
		{"0123456789abcde/", false},
		{strings.Repeat("ab", 64), true},
		{strings.Repeat("ab", 65), false},
	} {
		if got := buildid.Valid(tc.id); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

// note builds one ELF note.
func note(name string, typ uint32, desc []byte) []byte {
	var b bytes.Buffer
	nm := append([]byte(name), 0)
	_ = binary.Write(&b, binary.LittleEndian, []uint32{uint32(len(nm)), uint32(len(desc)), typ})
	b.Write(nm)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	b.Write(desc)
	for b.Len()%4 != 0 {
		b.WriteByte(0)
	}
	return b.Bytes()
}

// TestFindNoteHostile feeds notes a container could plant in a module.
func TestFindNoteHostile(t *testing.T) {
	id := bytes.Repeat([]byte{0xab}, 20)
	huge := note("GNU", 3, id)
	binary.LittleEndian.PutUint32(huge[4:], 1<<31) // descsz past the end
	for _, tc := range []struct {
		name string
		d    []byte
		want string
	}{
		{"build-id", note("GNU", 3, id), strings.Repeat("ab", 20)},
		{"after another note", append(note("GNU", 1, []byte{1, 2, 3, 4}), note("GNU", 3, id)...), strings.Repeat("ab", 20)},
		{"other owner", note("Go", 3, id), ""},
		{"descriptor past the end", huge, ""},
		{"too short to be a build-id", note("GNU", 3, []byte{1, 2}), ""},
		{"too long to be a build-id", note("GNU", 3, bytes.Repeat([]byte{1}, 100)), ""},
		{"cut", note("GNU", 3, id)[:20], ""},
		{"empty", nil, ""},
	} {
		if got := buildid.FindNote(tc.d, binary.LittleEndian, 4); got != tc.want {
			t.Errorf("%s: FindNote = %q, want %q", tc.name, got, tc.want)
		}
	}
}

// TestReadHostileHeaders: files that claim more than they hold are read
// without allocating what they claim.
func TestReadHostileHeaders(t *testing.T) {
	good := mustRead(t, "/bin/ls")
	for _, tc := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"not ELF", func(b []byte) []byte { return []byte("#!/bin/sh\n") }},
		{"cut after the header", func(b []byte) []byte { return b[:64] }},
		{"65535 program headers of 65535 bytes", func(b []byte) []byte {
			binary.LittleEndian.PutUint16(b[54:], 0xffff)
			binary.LittleEndian.PutUint16(b[56:], 0xffff)
			binary.LittleEndian.PutUint16(b[58:], 0xffff)
			binary.LittleEndian.PutUint16(b[60:], 0xffff)
			return b
		}},
		{"headers past the end", func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[32:], 1<<62)
			binary.LittleEndian.PutUint64(b[40:], 1<<62)
			return b
		}},
	} {
		b := tc.edit(append([]byte(nil), good...))
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		before := ms.TotalAlloc
		_, err := buildid.Read(bytes.NewReader(b), int64(len(b)))
		runtime.ReadMemStats(&ms)
		if err == nil {
			t.Errorf("%s: Read found a build-id", tc.name)
		}
		if grew := ms.TotalAlloc - before; grew > 8<<20 {
			t.Errorf("%s: Read allocated %d bytes", tc.name, grew)
		}
	}
}

func FuzzRead(f *testing.F) {
	f.Add(mustReadF(f, "/bin/true"))
	f.Add([]byte("\x7fELF"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := buildid.Read(bytes.NewReader(b), int64(len(b)))
		if err == nil && !buildid.Valid(info.ID) {
			t.Fatalf("Read returned an invalid build-id %q", info.ID)
		}
	})
}

func mustReadF(f *testing.F, p string) []byte {
	b, err := os.ReadFile(p)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
