package testcrash

import (
	"io"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

var readelfBuildID = regexp.MustCompile(`Build ID: ([0-9a-f]+)`)

// ReadelfBuildID is the outside oracle for a file's GNU build-id: binutils'
// reading of its notes (readelf -n). It is "" when the file has none.
func ReadelfBuildID(t testing.TB, path string) string {
	t.Helper()
	out, err := exec.Command("readelf", "-n", path).CombinedOutput()
	if err != nil {
		t.Fatalf("readelf -n %s: %v\n%s", path, err, out)
	}
	if m := readelfBuildID.FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return ""
}

// WithFile opens path and hands it to use with its size, as the readers
// under test take a file (io.ReaderAt and a size).
func WithFile(t testing.TB, path string, use func(r io.ReaderAt, size int64)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	use(f, st.Size())
}
