package app

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/coredog/coredog/agent/detect"
	"github.com/coredog/coredog/agent/serve"
)

// TestRemoveIfUnchanged changes a captured file in every way the agent must
// notice before it deletes it: the file is then kept. A pod that puts
// another file at the name (its own, or a link to a host file) cannot make
// the agent delete it either.
func TestRemoveIfUnchanged(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "host-file")
	must(t, os.WriteFile(outside, []byte("keep me"), 0o600))
	swap := func(t *testing.T, p string, put func(tmp string)) {
		t.Helper()
		tmp := p + ".swap"
		put(tmp)
		must(t, os.Rename(tmp, p))
	}
	for _, tc := range []struct {
		name    string
		change  func(t *testing.T, p string)
		wantErr error // nil: deleted
	}{
		{"unchanged: deleted", func(*testing.T, string) {}, nil},
		{"grown", func(t *testing.T, p string) {
			f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteString(" and the rest")
			must(t, err)
			must(t, f.Close())
		}, errChanged},
		{"rewritten in place, same size", func(t *testing.T, p string) {
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			must(t, err)
			_, err = f.WriteAt([]byte("X"), 0)
			must(t, err)
			must(t, f.Close())
		}, errChanged},
		{"modification time set back", func(t *testing.T, p string) {
			must(t, os.Chtimes(p, time.Unix(1, 0), time.Unix(1, 0)))
		}, errChanged},
		{"mode changed (ctime only)", func(t *testing.T, p string) { must(t, os.Chmod(p, 0o640)) }, errChanged},
		{"another file renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, os.WriteFile(tmp, []byte("first part"), 0o600)) })
		}, errChanged},
		{"a symlink to a host file renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, os.Symlink(outside, tmp)) })
		}, errChanged},
		{"a hard link to a host file renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, os.Link(outside, tmp)) })
		}, errChanged},
		{"a FIFO renamed over it", func(t *testing.T, p string) {
			swap(t, p, func(tmp string) { must(t, syscall.Mkfifo(tmp, 0o600)) })
		}, errChanged},
		{"gone", func(t *testing.T, p string) { must(t, os.Remove(p)) }, fs.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "core.web-0.app.1.11.1767225600")
			must(t, os.WriteFile(p, []byte("first part"), 0o600))
			f := detected(t, p)
			captured := serve.Entry{Name: "core-x", Path: p, Device: f.Identity.Device, Inode: f.Identity.Inode,
				Size: f.Identity.Size, ModTimeNanos: f.ModTime.UnixNano(), CtimeNanos: f.Identity.CtimeNanos}
			// Coarse timestamps would hide a change made within the same tick.
			time.Sleep(20 * time.Millisecond)
			tc.change(t, p)
			err := removeIfUnchanged(p, captured)
			if (err == nil) != (tc.wantErr == nil) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("removeIfUnchanged = %v, want %v", err, tc.wantErr)
			}
			_, statErr := os.Lstat(p)
			switch {
			case tc.wantErr == nil && statErr == nil:
				t.Error("the unchanged file was not deleted")
			case errors.Is(tc.wantErr, errChanged) && statErr != nil:
				t.Errorf("a changed file was deleted: %v", statErr)
			}
			if b, err := os.ReadFile(outside); err != nil || string(b) != "keep me" {
				t.Errorf("the host file was touched: %q, %v", b, err)
			}
		})
	}
}

// TestDropFileKeepsAFileStillBeingWritten: a core file the agent does not
// keep (refused by the node limit, or counted on another CoreDump once the
// creation budget is spent) is removed with its sidecar only if it is still
// the file that was judged complete. One that grew since is kept, for the
// detector to emit again, and is not reported gone (so it is not counted
// twice).
func TestDropFileKeepsAFileStillBeingWritten(t *testing.T) {
	dir := t.TempDir()
	det, err := detect.New(detect.Options{Dir: dir, SettleTime: time.Second})
	must(t, err)
	a := &Agent{log: logr.Discard(), detector: det}
	for _, tc := range []struct {
		name     string
		grow     bool
		wantGone bool
	}{
		{"unchanged: removed with its sidecar", false, true},
		{"grown since it was judged complete: kept", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "core."+strings.ReplaceAll(tc.name, " ", "-"))
			must(t, os.WriteFile(p, []byte("first half"), 0o600))
			must(t, os.WriteFile(cgroupSidecar(p), []byte("0::/x"), 0o600))
			f := detected(t, p)
			if tc.grow {
				w, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
				must(t, err)
				_, err = w.WriteString(" and the second half")
				must(t, err)
				must(t, w.Close())
			}
			if gone := a.dropFile(f, capturedEntry("n", f), "counted"); gone != tc.wantGone {
				t.Fatalf("dropFile reported gone=%v, want %v", gone, tc.wantGone)
			}
			for _, q := range []string{p, cgroupSidecar(p)} {
				_, err := os.Lstat(q)
				if exists := err == nil; exists == tc.wantGone {
					t.Fatalf("%s exists=%v after dropFile (err %v)", filepath.Base(q), exists, err)
				}
			}
		})
	}
}
