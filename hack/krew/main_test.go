package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRunRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"version without v", []string{"-version", "1.2.3"}, "not a v-prefixed semantic version"},
		{"version with two parts", []string{"-version", "v1.2"}, "not a v-prefixed semantic version"},
		{"platform without arch", []string{"-repo", "../..", "-out", "OUT", "-platforms", "linux"}, "is not os/arch"},
		{"empty os", []string{"-repo", "../..", "-out", "OUT", "-platforms", "/amd64"}, "is not os/arch"},
		{"positional argument", []string{"extra"}, "unexpected arguments"},
		{"no licence", []string{"-repo", "EMPTY"}, "none of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := make([]string, len(tc.args))
			for i, a := range tc.args {
				switch a {
				case "OUT", "EMPTY":
					a = t.TempDir()
				}
				args[i] = a
			}
			err := run(args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%q) = %v, want an error with %q", tc.args, err, tc.want)
			}
		})
	}
}

func TestFindLicencePrefersLicence(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"README.md", "COPYING", "LICENSE"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := findLicence(dir)
	if err != nil || got != "LICENSE" {
		t.Fatalf("findLicence = %q, %v; want LICENSE", got, err)
	}
}

// TestTarGzIsReproducible: the same files give the same bytes whatever
// their modification times and owners, so a rebuild keeps the manifest's
// sha256.
func TestTarGzIsReproducible(t *testing.T) {
	dir := t.TempDir()
	bin, doc := filepath.Join(dir, "bin"), filepath.Join(dir, "doc")
	write := func() {
		t.Helper()
		for p, s := range map[string]string{bin: "\x7fELF binary", doc: "readme"} {
			if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries := []entry{{name: "kubectl-coredog", path: bin, mode: 0o755}, {name: "README.md", path: doc, mode: 0o644}}
	write()
	first, err := tarGz(entries)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(bin, archiveTime.AddDate(3, 0, 0), archiveTime.AddDate(3, 0, 0)); err != nil {
		t.Fatal(err)
	}
	write()
	second, err := tarGz(entries)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatal("two archives of the same files differ")
	}

	gz, err := gzip.NewReader(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var got []string
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(archiveTime) || h.Uid != 0 || h.Gid != 0 || h.Uname != "" {
			t.Errorf("%s: time %v uid %d gid %d uname %q, want fixed", h.Name, h.ModTime, h.Uid, h.Gid, h.Uname)
		}
		got = append(got, fmt.Sprintf("%s %o", h.Name, h.Mode))
	}
	if want := []string{"kubectl-coredog 755", "README.md 644"}; !slices.Equal(got, want) {
		t.Errorf("entries %v, want %v", got, want)
	}
}
