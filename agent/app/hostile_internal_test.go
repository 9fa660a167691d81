package app

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coredog/coredog/agent/detect"
)

// detected is what the detector would have emitted for path now.
func detected(t *testing.T, path string) detect.File {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	return detect.File{
		Path: path, RelPath: filepath.Base(path), ModTime: fi.ModTime(), SeenAt: time.Now(), CompleteAt: time.Now(),
		Identity: detect.Identity{Device: uint64(st.Dev), Inode: st.Ino, CtimeNanos: st.Ctim.Nano(), Size: fi.Size()}, //nolint:unconvert
	}
}

// TestDescribeRefusesWhatIsNotTheDetectedFile swaps the file between
// detection and capture, the window a rename race needs: capture must open
// nothing but the regular file that was detected, with one link, and must
// not hang on what is swapped in.
func TestDescribeRefusesWhatIsNotTheDetectedFile(t *testing.T) {
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("token=hunter2"), 0o600); err != nil {
		t.Fatal(err)
	}
	swap := func(t *testing.T, p string, put func(tmp string)) {
		t.Helper()
		tmp := p + ".swap"
		put(tmp)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name string
		// after returns the error describe must give once the detected file was tampered with.
		after   func(t *testing.T, p string)
		hardErr error // describe's err must wrap this; nil: any error
	}{
		{"another file renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, os.WriteFile(tmp, []byte("impostor"), 0o600)) })
		}, nil},
		{"a symlink to a host file renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, os.Symlink(outside, tmp)) })
		}, syscall.ELOOP},
		{"a FIFO renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, syscall.Mkfifo(tmp, 0o600)) })
		}, nil},
		{"a hard link to a host file renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, os.Link(outside, tmp)) })
		}, nil},
		{"deleted", func(t *testing.T, p string) { must(t, os.Remove(p)) }, os.ErrNotExist},
		{"a hard link made to it", func(t *testing.T, p string) {
			// Same inode, but a second name: could be a link planted to a
			// file outside, so it is not described.
			must(t, os.Link(p, p+".second"))
		}, errHardLink},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "core."+filepath.Base(t.Name()))
			must(t, os.WriteFile(p, []byte("\x7fELF detected core"), 0o600))
			f := detected(t, p)
			tc.after(t, p)
			done := make(chan struct{})
			var err error
			go func() {
				defer close(done)
				_, _, _, _, err = describe(f, false, nil)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("describe hung on what was swapped in")
			}
			if err == nil {
				t.Fatal("described a file that is not the one detected")
			}
			if tc.hardErr != nil && !errors.Is(err, tc.hardErr) {
				t.Fatalf("err = %v, want %v", err, tc.hardErr)
			}
		})
	}

	// The untouched file is described.
	p := filepath.Join(dir, "core.untouched")
	must(t, os.WriteFile(p, []byte("\x7fELF detected core"), 0o600))
	if _, _, _, _, err := describe(detected(t, p), false, nil); err != nil {
		t.Fatalf("the detected file itself: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
