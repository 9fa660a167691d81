package hostdir

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/coredog/coredog/test/attacker"
)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the path to open.
		setup      func(t *testing.T, dir string) string
		wantShared bool // OpenShared succeeds
		wantStrict bool // Open succeeds
	}{
		{name: "root's 0755", setup: func(_ *testing.T, dir string) string { return dir }, wantShared: true, wantStrict: true},
		{name: "root's 1777 (shared core directory)", setup: func(t *testing.T, dir string) string {
			must(t, os.Chmod(dir, os.ModeSticky|0o777))
			return dir
		}, wantShared: true},
		{name: "root's 0700 under a sticky 1777", setup: func(t *testing.T, dir string) string {
			must(t, os.Chmod(dir, os.ModeSticky|0o777))
			must(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
			return filepath.Join(dir, "d")
		}, wantShared: true, wantStrict: true},
		{name: "root's 0700 under a non-sticky 0777", setup: func(t *testing.T, dir string) string {
			must(t, os.Chmod(dir, 0o777))
			must(t, os.Mkdir(filepath.Join(dir, "d"), 0o700))
			return filepath.Join(dir, "d")
		}},
		{name: "uid 1000's directory", setup: func(t *testing.T, dir string) string {
			must(t, os.Chmod(dir, os.ModeSticky|0o777))
			attacker.Run(t, "mkdir -m 0700 "+dir+"/d")
			return filepath.Join(dir, "d")
		}},
		{name: "a link to root's directory", setup: func(t *testing.T, dir string) string {
			must(t, os.Mkdir(filepath.Join(dir, "real"), 0o700))
			must(t, os.Symlink("real", filepath.Join(dir, "d")))
			return filepath.Join(dir, "d")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := tt.setup(t, attacker.ReachableDir(t))
			for _, c := range []struct {
				open func(string) (*Dir, error)
				want bool
				what string
			}{{OpenShared, tt.wantShared, "OpenShared"}, {Open, tt.wantStrict, "Open"}} {
				d, err := c.open(p)
				if (err == nil) != c.want {
					t.Errorf("%s(%s) = %v, want success %v", c.what, p, err, c.want)
				}
				if err == nil {
					_ = d.Close()
				} else if c.want == false && !errors.Is(err, ErrUnsafe) {
					t.Errorf("%s error %v is not ErrUnsafe", c.what, err)
				}
			}
		})
	}
}

func TestFilesInAVerifiedDirectory(t *testing.T) {
	d, err := Open(t.TempDir())
	must(t, err)
	defer d.Close()
	// A link at the name is replaced, never followed.
	target := filepath.Join(t.TempDir(), "target")
	must(t, os.WriteFile(target, []byte("keep"), 0o600))
	must(t, os.Symlink(target, filepath.Join(d.Path(), "f")))
	if _, err := d.Create("f", 0o600); err == nil {
		t.Fatal("Create over a link succeeded")
	}
	if _, err := d.ReadFile("f", 100); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("ReadFile of a link = %v", err)
	}
	must(t, d.WriteFile("f", 0o600, func(w io.Writer) error { _, err := io.WriteString(w, "mine"); return err }))
	if b, _ := os.ReadFile(target); string(b) != "keep" {
		t.Fatalf("wrote through the link: %q", b)
	}
	b, err := d.ReadFile("f", 100)
	if err != nil || string(b) != "mine" {
		t.Fatalf("ReadFile = %q, %v", b, err)
	}
	// Files root did not write, or that others may write, are not read.
	must(t, os.Chmod(filepath.Join(d.Path(), "f"), 0o666))
	if _, err := d.ReadFile("f", 100); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("ReadFile of a 0666 file = %v", err)
	}
	must(t, os.Chmod(filepath.Join(d.Path(), "f"), 0o600))
	must(t, os.Link(filepath.Join(d.Path(), "f"), filepath.Join(d.Path(), "g")))
	if _, err := d.ReadFile("f", 100); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("ReadFile of a file with two links = %v", err)
	}
	if _, err := d.ReadFile("missing", 100); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("ReadFile of a missing file = %v", err)
	}
}
