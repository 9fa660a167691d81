package cli

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/storage"
)

// sysrootDir is the sysroot's name in a --with-binaries directory.
const sysrootDir = "sysroot"

// errHostilePath: a module path that would leave the sysroot.
var errHostilePath = errors.New("the module path would leave the sysroot")

// sysrootPath is where a module's file goes under the sysroot: its path in
// the process's mount namespace, relative. The path is the node's word (the
// agent read it from the core), so anything that is not a plain absolute
// path is refused: no "..", no ".", no empty segments, no NUL, no
// backslashes (a separator on windows).
func sysrootPath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") || len(p) > 4096 || strings.ContainsAny(p, "\x00\\") {
		return "", fmt.Errorf("%w: %q is not an absolute path", errHostilePath, p)
	}
	rel := strings.TrimPrefix(p, "/")
	for seg := range strings.SplitSeq(rel, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("%w: %q has a %q segment", errHostilePath, p, seg)
		}
	}
	if path.Clean(p) != p || rel == "" {
		return "", fmt.Errorf("%w: %q is not a clean path", errHostilePath, p)
	}
	return rel, nil
}

// sysrootFile is one module written into the sysroot.
type sysrootFile struct {
	module coredogv1.CrashModule
	// path is the file on this machine; "" when it was not written.
	path string
	err  error
}

// openModule reads a module's stored executable by build-id.
type openModule func(ctx context.Context, buildID string) (io.ReadCloser, error)

// writeSysroot writes each Stored module with a build-id into root (a
// directory the caller created for it) at its path, and checks that each
// file has the build-id it was asked for. A module that cannot be written
// is reported, not fatal.
func writeSysroot(ctx context.Context, root string, modules []coredogv1.CrashModule, open openModule) []sysrootFile {
	r, err := os.OpenRoot(root)
	if err != nil {
		return []sysrootFile{{err: err}}
	}
	defer r.Close()
	var out []sysrootFile
	for _, m := range modules {
		if m.State != coredogv1.ModuleStored || m.BuildID == "" {
			continue
		}
		f := sysrootFile{module: m}
		f.path, f.err = writeModule(ctx, r, m, open)
		out = append(out, f)
	}
	return out
}

func writeModule(ctx context.Context, r *os.Root, m coredogv1.CrashModule, open openModule) (string, error) {
	id := strings.ToLower(m.BuildID)
	if !buildid.Valid(id) {
		return "", fmt.Errorf("build-id %q is not one", m.BuildID)
	}
	rel, err := sysrootPath(m.Path)
	if err != nil {
		return "", err
	}
	if err := mkdirNoLinks(r, path.Dir(rel)); err != nil {
		return "", err
	}
	src, err := open(ctx, id)
	if err != nil {
		return "", err
	}
	defer src.Close()
	// O_EXCL: a second module with the same path, or anything already
	// there, is not overwritten; O_NOFOLLOW: nor is a planted symlink.
	dst, err := r.OpenFile(filepath.FromSlash(rel), os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o700)
	if err != nil {
		return "", err
	}
	_, err = io.Copy(dst, storage.CtxReader{Ctx: ctx, R: src})
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = checkBuildID(r, rel, id)
	}
	if err != nil {
		_ = r.Remove(filepath.FromSlash(rel))
		return "", err
	}
	return filepath.Join(r.Name(), filepath.FromSlash(rel)), nil
}

// mkdirNoLinks creates dir's segments under r, refusing any that exists
// as something else than a directory (a symlink among them).
func mkdirNoLinks(r *os.Root, dir string) error {
	if dir == "." {
		return nil
	}
	cur := ""
	for seg := range strings.SplitSeq(dir, "/") {
		cur = path.Join(cur, seg)
		fi, err := r.Lstat(filepath.FromSlash(cur))
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := r.Mkdir(filepath.FromSlash(cur), 0o700); err != nil {
				return err
			}
		case err != nil:
			return err
		case fi.Mode()&os.ModeSymlink != 0:
			return fmt.Errorf("%w: /%s is a symlink in the sysroot", errHostilePath, cur)
		case !fi.IsDir():
			return fmt.Errorf("/%s is a file in the sysroot, not a directory", cur)
		}
	}
	return nil
}

// checkBuildID refuses a written file whose GNU build-id is not want: the
// bucket may hold anything under a build-id's key.
func checkBuildID(r *os.Root, rel, want string) error {
	f, err := r.Open(filepath.FromSlash(rel))
	if err != nil {
		return err
	}
	defer f.Close()
	e, err := elf.NewFile(f)
	if err != nil {
		return fmt.Errorf("the stored file is not ELF: %w", err)
	}
	defer e.Close()
	for _, s := range e.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		d, err := io.ReadAll(io.LimitReader(s.Open(), 1<<16))
		if err != nil {
			continue
		}
		if id := gnuBuildID(d, e.ByteOrder); id != "" {
			if id != want {
				return fmt.Errorf("the stored file's build-id is %s, not %s", id, want)
			}
			return nil
		}
	}
	return fmt.Errorf("the stored file has no build-id, not %s", want)
}

// gnuBuildID finds an NT_GNU_BUILD_ID note in a note section's data.
func gnuBuildID(d []byte, bo interface{ Uint32([]byte) uint32 }) string {
	for len(d) >= 12 {
		namesz, descsz, typ := bo.Uint32(d), bo.Uint32(d[4:]), bo.Uint32(d[8:])
		if namesz > 1<<12 || descsz > 1<<12 {
			return ""
		}
		name, desc := int(namesz+3)&^3, int(descsz+3)&^3
		if 12+name+desc > len(d) {
			return ""
		}
		if typ == 3 && bytes.Equal(d[12:12+int(namesz)], []byte("GNU\x00")) {
			return hex.EncodeToString(d[12+name : 12+name+int(descsz)])
		}
		d = d[12+name+desc:]
	}
	return ""
}

// downloadWithBinaries writes the dump and a sysroot of its stored modules
// into a new directory, and prints the gdb command line that opens them.
func (a *app) downloadWithBinaries(ctx context.Context, cd *coredogv1.CoreDump, o downloadOptions) (*binariesResult, error) {
	dir := o.output
	if dir == "" {
		dir = cd.Name
	}
	if dir == "-" {
		return nil, fmt.Errorf("%w: --with-binaries writes a directory; -o names it", errUsage)
	}
	if _, err := storedObject(cd); err != nil {
		return nil, err
	}
	if err := newDir(dir); err != nil {
		return nil, err
	}
	core, err := a.fetchDump(ctx, cd, downloadOptions{output: filepath.Join(dir, cd.Name+".core"), storageURL: o.storageURL, scratch: o.scratch})
	if err != nil {
		return nil, err
	}
	res := &binariesResult{dir: dir, core: core, sysroot: filepath.Join(dir, sysrootDir)}
	if err := os.Mkdir(res.sysroot, 0o700); err != nil {
		return nil, err
	}
	var modules []coredogv1.CrashModule
	if cd.Status.Analysis != nil {
		modules = cd.Status.Analysis.Modules
	}
	stored := 0
	for _, m := range modules {
		if m.State == coredogv1.ModuleStored && m.BuildID != "" {
			stored++
		}
	}
	if stored > 0 {
		loc, err := a.policyLocation(ctx, cd.Spec.PolicyName, o.storageURL)
		if err != nil {
			return nil, err
		}
		creds, err := CredsFromEnv(loc.Scheme, a.getenv)
		if err != nil {
			return nil, err
		}
		store, err := a.openStore(ctx, loc, creds)
		if err != nil {
			return nil, storeError(loc, loc.BucketURL(), err)
		}
		defer store.Close()
		res.files = writeSysroot(ctx, res.sysroot, modules, func(ctx context.Context, id string) (io.ReadCloser, error) {
			key, _ := buildid.KeyFor(id, buildid.Executable)
			rc, err := store.Read(ctx, key)
			if err != nil {
				return nil, storeError(loc, loc.ObjectURL(key), err)
			}
			return rc, nil
		})
	}
	res.exe = executableIn(cd, res.files)
	w := a.stdout
	if o.scratch {
		w = a.stderr
	}
	written := 0
	for _, f := range res.files {
		if f.err != nil {
			fmt.Fprintf(w, "Not written: %s (build-id %s): %s\n", safe(f.module.Path), safe(f.module.BuildID), safe(f.err.Error()))
			continue
		}
		written++
	}
	fmt.Fprintf(w, "Wrote %d of the %d modules kept in storage into %s (%d modules in the core were not kept)\n",
		written, stored, res.sysroot, len(modules)-stored)
	if !o.scratch {
		fmt.Fprintf(w, "\n# Open it:\n%s\n", res.gdbCommand())
	}
	return res, nil
}

// newDir creates dir, or takes an existing empty directory.
func newDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if !errors.Is(err, os.ErrExist) {
		return err
	}
	entries, rerr := os.ReadDir(dir)
	if rerr != nil || len(entries) > 0 {
		return fmt.Errorf("%s exists and is not an empty directory: choose another with -o", dir)
	}
	return nil
}

// binariesResult is what --with-binaries wrote.
type binariesResult struct {
	dir, core, sysroot, exe string
	files                   []sysrootFile
}

// executableIn is the written file of the program that crashed: the module
// named like the process's executable.
func executableIn(cd *coredogv1.CoreDump, files []sysrootFile) string {
	exe := cd.Spec.Process.Executable
	for _, f := range files {
		base := path.Base(f.module.Path)
		if f.err == nil && exe != "" && (base == exe || len(exe) == 15 && strings.HasPrefix(base, exe)) {
			return f.path
		}
	}
	return ""
}

// gdbArgs is the gdb command line that opens the core with the sysroot:
// the libraries by their path in it (set sysroot) or, where the core names
// a library by another path than the one it was kept at (/lib and
// /usr/lib on merged-/usr systems), by name in their directories
// (solib-search-path); the program from it.
func (r *binariesResult) gdbArgs() []string {
	var dirs []string
	seen := map[string]bool{}
	for _, f := range r.files {
		if d := filepath.Dir(f.path); f.err == nil && f.path != r.exe && !seen[d] && !strings.Contains(d, ":") {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	// -iex: before the program and core are loaded; -ex would come after
	// gdb had already taken the libraries from this machine.
	args := []string{"gdb", "-iex", "set sysroot " + r.sysroot}
	if len(dirs) > 0 {
		args = append(args, "-iex", "set solib-search-path "+strings.Join(dirs, ":"))
	}
	if r.exe != "" {
		return append(args, r.exe, r.core)
	}
	return append(args, "-c", r.core)
}

// gdbCommand is gdbArgs quoted for a shell: paths come from the node.
func (r *binariesResult) gdbCommand() string {
	args := r.gdbArgs()
	for i, a := range args {
		args[i] = shellQuote(a)
	}
	return strings.Join(args, " ")
}
