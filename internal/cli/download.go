package cli

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/storage"
)

// progressThreshold is the stored size from which download draws progress.
const progressThreshold = 8 << 20

// Sentinel errors callers and tests branch on.
var (
	// errIntegrity: the fetched dump does not match its CoreDump's size or SHA-256.
	errIntegrity = errors.New("integrity check failed")
	// errNoCredentials: storage refused or could not find the caller's credentials.
	errNoCredentials = errors.New("no usable storage credentials")
	// errNotStored: the dump has no stored object to fetch.
	errNotStored = errors.New("the dump is not in storage")
)

type downloadOptions struct {
	output     string
	raw, force bool
	storageURL string
	// scratch: the file is the command's own temporary copy (debug --run),
	// so the report goes to stderr and does not name it.
	scratch bool
	// withBinaries: output is a directory with the dump and a sysroot of
	// its stored modules.
	withBinaries bool
}

func downloadCommand() command {
	return command{
		name:    "download",
		args:    "NAME [-o FILE] [flags]",
		summary: "Fetch a stored dump with your own storage credentials and check it.",
		help: `Fetch a stored dump from object storage with your own credentials (not the
controller's), decompress it, check it against the SHA-256 and size the
CoreDump records, and write it with mode 0600. The file appears under its
name only once the check passed; a dump that fails the check is deleted.

Credentials: for s3://, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
AWS_SESSION_TOKEN) when set, else the AWS default chain (AWS_PROFILE, SSO,
IAM role); for gs://, Application Default Credentials; for azblob://,
AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT with
AZURE_STORAGE_KEY, else DefaultAzureCredential; file:// reads the directory
on this machine.

With --with-binaries, DIR (-o, default NAME) gets the dump and a sysroot:
every module of status.analysis.modules that was kept in storage (state
Stored) is fetched by its build-id and written at its path under
DIR/sysroot, checked to have that build-id; the command prints the gdb
command line that opens the dump with them. Module paths come from the
node: one that would leave the sysroot (.., a symlink) is refused.

The bucket's options (endpoint, region, use_path_style) come from the
CoreDumpPolicy; if you may not read policies, pass them with --storage-url.

Examples:
  kubectl coredog download core-5f0c9e1a2b3c
  kubectl coredog download core-5f0c9e1a2b3c -o /tmp/core
  kubectl coredog download core-5f0c9e1a2b3c --raw -o core.zst
  kubectl coredog download core-5f0c9e1a2b3c -o - | gdb -q ./server /dev/stdin
  kubectl coredog download core-5f0c9e1a2b3c --with-binaries -o /tmp/crash
  kubectl coredog download core-5f0c9e1a2b3c \
      --storage-url 's3://cores?endpoint=https://minio.example:9000&use_path_style=true'`,
		setup: func(fs *pflag.FlagSet) func(context.Context, *app, []string) error {
			o := &downloadOptions{}
			fs.StringVarP(&o.output, "output", "o", "", "File to write (default NAME.core, or NAME.core.zst with --raw); a directory puts that name in it; - writes to standard output.")
			fs.BoolVar(&o.raw, "raw", false, "Keep the stored compression (.zst, .gz); the check still decompresses on the side.")
			fs.BoolVar(&o.force, "force", false, "Overwrite FILE if it exists.")
			fs.StringVar(&o.storageURL, "storage-url", "", "Bucket URL with its options, instead of the policy's spec.storage.url.")
			fs.BoolVar(&o.withBinaries, "with-binaries", false,
				"Also fetch the program and libraries kept by build-id into DIR/sysroot (-o names DIR, default NAME), and print the gdb command.")
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("%w: download takes one CoreDump name", errUsage)
				}
				if err := a.noAllNamespaces("download"); err != nil {
					return err
				}
				cd, err := a.getDump(ctx, args[0])
				if err != nil {
					return err
				}
				if o.withBinaries {
					if o.raw {
						return fmt.Errorf("%w: --with-binaries writes the dump decompressed, for gdb; leave out --raw", errUsage)
					}
					_, err = a.downloadWithBinaries(ctx, cd, *o)
					return err
				}
				_, err = a.fetchDump(ctx, cd, *o)
				return err
			}
		},
	}
}

// fetchDump downloads cd as o says and returns the path written ("-" for
// standard output).
func (a *app) fetchDump(ctx context.Context, cd *coredogv1.CoreDump, o downloadOptions) (string, error) {
	st, err := storedObject(cd)
	if err != nil {
		return "", err
	}
	target := o.output
	if target == "" || isDir(target) {
		target = filepath.Join(target, defaultFileName(cd.Name, st, o.raw))
	}
	if target == "-" && a.isTerminal(a.stdout) {
		return "", fmt.Errorf("refusing to write a core dump to a terminal: pipe it (-o - | ...) or name a file with -o")
	}
	if target != "-" && !o.force {
		if _, err := os.Lstat(target); err == nil {
			return "", fmt.Errorf("%s exists; pass --force to overwrite it, or -o to choose another file", target)
		}
	}
	store, loc, key, err := a.openDumpStore(ctx, cd, st, o.storageURL)
	if err != nil {
		return "", err
	}
	defer store.Close()
	r, err := store.Read(ctx, key)
	if err != nil {
		return "", storeError(loc, st.URL, err)
	}
	defer r.Close()

	// Stop reading as soon as the command is interrupted, whatever the
	// store's reader does with its context.
	var src io.Reader = storage.CtxReader{Ctx: ctx, R: r}
	var prog *progress
	if a.isTerminal(a.stderr) && st.StoredSize >= progressThreshold {
		prog = &progress{r: src, w: a.stderr, total: st.StoredSize, label: cd.Name, now: a.now}
		src = prog
	}
	if target == "-" {
		res, err := copyVerified(a.stdout, src, st.Compression, o.raw)
		prog.done()
		if err == nil {
			err = checkIntegrity(res, st, cd.Spec.Size)
		}
		if err != nil {
			return "", fmt.Errorf("CoreDump %s: %w; what was written to standard output is not the dump: discard it", cd.Name, err)
		}
		a.reportDownload(a.stderr, cd, "standard output", res, st)
		return target, nil
	}

	dir, base := filepath.Split(target)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.part")
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", target, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o600); err != nil {
		return "", fmt.Errorf("creating %s: %w", target, err)
	}
	res, err := copyVerified(tmp, src, st.Compression, o.raw)
	prog.done()
	if err == nil {
		err = checkIntegrity(res, st, cd.Spec.Size)
	}
	if err != nil {
		if errors.Is(err, errIntegrity) || errors.Is(err, errCorrupt) {
			return "", fmt.Errorf("CoreDump %s: %w; the partial file was deleted, nothing was written to "+
				"%s. The object at %s may be damaged or replaced: do not debug with it", cd.Name, err, target, st.URL)
		}
		return "", fmt.Errorf("downloading %s: %w; the partial file was deleted", st.URL, err)
	}
	if err := tmp.Sync(); err != nil {
		return "", fmt.Errorf("writing %s: %w", target, err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("writing %s: %w", target, err)
	}
	if err := place(tmp.Name(), target, o.force); err != nil {
		return "", err
	}
	committed = true
	if o.scratch {
		a.reportDownload(a.stderr, cd, "", res, st)
	} else {
		a.reportDownload(a.stdout, cd, target, res, st)
	}
	return target, nil
}

func (a *app) reportDownload(w io.Writer, cd *coredogv1.CoreDump, where string, res transfer, st *coredogv1.StorageStatus) {
	check := "SHA-256 verified"
	if st.SHA256 == "" {
		check = "no SHA-256 recorded, not verified"
	}
	if where == "" {
		fmt.Fprintf(w, "Fetched %s (%s, %s)\n", cd.Name, coredogv1.DisplaySize(res.written), check)
		return
	}
	fmt.Fprintf(w, "Downloaded %s to %s (%s, %s)\n", cd.Name, where, coredogv1.DisplaySize(res.written), check)
}

// storedObject is cd's stored object, or why there is none.
func storedObject(cd *coredogv1.CoreDump) (*coredogv1.StorageStatus, error) {
	st := cd.Status.Storage
	if cd.Status.Phase == coredogv1.PhaseUploaded && st != nil && st.Key != "" && st.URL != "" {
		return st, nil
	}
	why := fmt.Sprintf("its phase is %s", phase(cd))
	switch cd.Status.Phase {
	case "", coredogv1.PhasePending, coredogv1.PhaseUploading:
		why += "; wait until it is Uploaded (kubectl coredog list), or see kubectl coredog status"
	case coredogv1.PhaseSkipped:
		why += "; skipped dumps are not stored, only described"
	case coredogv1.PhaseFailed:
		why += "; the upload failed for good (kubectl coredog describe " + cd.Name + " says why)"
	}
	if cd.Status.Message != "" {
		why += ": " + cd.Status.Message
	}
	return nil, fmt.Errorf("CoreDump %s cannot be downloaded: %w: %s", cd.Name, errNotStored, why)
}

func defaultFileName(name string, st *coredogv1.StorageStatus, raw bool) string {
	if !raw {
		return name + ".core"
	}
	switch compressionOf(st) {
	case coredogv1.CompressionZstd:
		return name + ".core.zst"
	case coredogv1.CompressionGzip:
		return name + ".core.gz"
	}
	return name + ".core"
}

// compressionOf is the stored object's compression, from the status or,
// for dumps stored before it was recorded, from the key's extension.
func compressionOf(st *coredogv1.StorageStatus) coredogv1.Compression {
	if st.Compression != "" {
		return st.Compression
	}
	return coredogv1.Compression(storage.EncodingOfKey(st.Key).Compression)
}

func isDir(p string) bool {
	if p == "" || p == "-" {
		return p == ""
	}
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// place gives the checked temp file its name. Without force a hard link
// makes the name appear only if nothing has it, so a file created meanwhile
// is never replaced.
func place(tmp, target string, force bool) error {
	if force {
		if err := os.Rename(tmp, target); err != nil {
			return fmt.Errorf("writing %s: %w", target, err)
		}
		return nil
	}
	err := os.Link(tmp, target)
	switch {
	case err == nil:
		os.Remove(tmp)
		return nil
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%s exists; pass --force to overwrite it, or -o to choose another file", target)
	}
	// File systems without hard links: check, then rename.
	if _, lerr := os.Lstat(target); lerr == nil {
		return fmt.Errorf("%s exists; pass --force to overwrite it, or -o to choose another file", target)
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("writing %s: %w", target, err)
	}
	return nil
}

// openDumpStore opens the bucket of cd's stored object st with the
// caller's own credentials (from the environment), and gives the object's
// key in it; override is --storage-url.
func (a *app) openDumpStore(ctx context.Context, cd *coredogv1.CoreDump, st *coredogv1.StorageStatus, override string) (storage.Store, *storage.Location, string, error) {
	loc, key, err := a.storageLocation(ctx, cd, override)
	if err != nil {
		return nil, nil, "", err
	}
	creds, err := CredsFromEnv(loc.Scheme, a.getenv)
	if err != nil {
		return nil, nil, "", err
	}
	store, err := a.openStore(ctx, loc, creds)
	if err != nil {
		return nil, nil, "", storeError(loc, st.URL, err)
	}
	return store, loc, key, nil
}

// storageLocation is the bucket and key of cd's object: from --storage-url,
// else from its policy, else (when the policy cannot be read) from the
// object URL itself, without the bucket's options.
func (a *app) storageLocation(ctx context.Context, cd *coredogv1.CoreDump, override string) (*storage.Location, string, error) {
	st := cd.Status.Storage
	if override != "" {
		loc, key, err := Locate(st, override)
		if errors.Is(err, errMoved) {
			fmt.Fprintf(a.stderr, "Warning: --storage-url names another bucket than the dump's (%s); reading key %s from it\n", st.URL, st.Key)
			return loc, key, nil
		}
		return loc, key, err
	}
	c, err := a.client()
	if err != nil {
		return nil, "", err
	}
	var p coredogv1.CoreDumpPolicy
	err = c.Get(ctx, client.ObjectKey{Name: cd.Spec.PolicyName}, &p)
	switch {
	case err == nil:
		loc, key, err := Locate(st, p.Spec.Storage.URL)
		if errors.Is(err, errMoved) {
			return nil, "", fmt.Errorf("CoreDumpPolicy %s now stores into %s, but the dump is at "+
				"%s: pass that bucket's URL with its options as --storage-url", p.Name, p.Spec.Storage.URL, st.URL)
		}
		return loc, key, err
	case apierrors.IsNotFound(err) || apierrors.IsForbidden(err):
		why := "it is gone"
		if apierrors.IsForbidden(err) {
			why = "you may not read CoreDumpPolicies"
		}
		loc, key, lerr := LocateFromObjectURL(st)
		if lerr != nil {
			return nil, "", fmt.Errorf("cannot read CoreDumpPolicy %s (%s) for the bucket's options, and %v: pass --storage-url", cd.Spec.PolicyName, why, lerr)
		}
		if loc.Scheme != storage.SchemeFile {
			fmt.Fprintf(a.stderr, "Note: cannot read CoreDumpPolicy %s (%s); using %s without the policy's "+
				"options (endpoint, region, ...). If that fails, pass them with --storage-url.\n", cd.Spec.PolicyName, why, loc.BucketURL())
		}
		return loc, key, nil
	}
	return nil, "", apiError(err, "reading CoreDumpPolicy "+cd.Spec.PolicyName)
}

// errMoved: a bucket URL does not hold the object the status names.
var errMoved = errors.New("the storage URL names another bucket")

// Locate opens bucketURL (a policy's spec.storage.url, or --storage-url)
// for st's object and returns the key to read. The key is status.storage.key,
// which holds the policy's prefix, so the location's own prefix is dropped.
// The location is returned with errMoved when its bucket is not the one in
// status.storage.url.
func Locate(st *coredogv1.StorageStatus, bucketURL string) (*storage.Location, string, error) {
	loc, err := storage.ParseURL(bucketURL)
	if err != nil {
		return nil, "", fmt.Errorf("storage URL: %w", err)
	}
	loc.Prefix = ""
	readOnly(loc)
	if _, ok := loc.StoredKey(st.URL, st.Key); !ok {
		return loc, st.Key, errMoved
	}
	return loc, st.Key, nil
}

// LocateFromObjectURL derives the bucket from status.storage.url alone,
// for callers who may not read the policy. S3 options (endpoint, region)
// are lost: AWS itself needs none, other servers need --storage-url.
func LocateFromObjectURL(st *coredogv1.StorageStatus) (*storage.Location, string, error) {
	loc, err := storage.LocationOf(st.URL, st.Key)
	if err != nil {
		return nil, "", fmt.Errorf("the dump's URL: %w", err)
	}
	readOnly(loc)
	return loc, st.Key, nil
}

// readOnly keeps a file:// store from creating directories on the
// caller's machine: a missing directory means it is not mounted here.
func readOnly(loc *storage.Location) {
	if loc.Scheme == storage.SchemeFile {
		loc.Query.Set("create_dir", "false")
	}
}

// CredsFromEnv builds storage.Open's credentials from the caller's
// environment: nil means the cloud's default chain, which reads the
// environment too, but checking here lets a half-set pair fail clearly.
func CredsFromEnv(scheme string, getenv func(string) string) (map[string][]byte, error) {
	switch scheme {
	case storage.SchemeS3:
		id, secret := getenv(storage.KeyAWSAccessKeyID), getenv(storage.KeyAWSSecretAccessKey)
		switch {
		case id == "" && secret == "":
			return nil, nil
		case id == "":
			return nil, fmt.Errorf("%w: AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not: set both, "+
				"or neither to use the AWS default chain (AWS_PROFILE, SSO, IAM role)", errNoCredentials)
		case secret == "":
			return nil, fmt.Errorf("%w: AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not: set both, "+
				"or neither to use the AWS default chain (AWS_PROFILE, SSO, IAM role)", errNoCredentials)
		}
		creds := map[string][]byte{storage.KeyAWSAccessKeyID: []byte(id), storage.KeyAWSSecretAccessKey: []byte(secret)}
		if tok := getenv(storage.KeyAWSSessionToken); tok != "" {
			creds[storage.KeyAWSSessionToken] = []byte(tok)
		}
		return creds, nil
	case storage.SchemeAzure:
		if cs := getenv(storage.KeyAzureConnString); cs != "" {
			return map[string][]byte{storage.KeyAzureConnString: []byte(cs)}, nil
		}
		key, account := getenv(storage.KeyAzureKey), getenv(storage.KeyAzureAccount)
		if key == "" {
			return nil, nil
		}
		creds := map[string][]byte{storage.KeyAzureKey: []byte(key)}
		if account != "" {
			creds[storage.KeyAzureAccount] = []byte(account)
		}
		return creds, nil
	}
	return nil, nil
}

// credentialHint says how to give the plugin credentials for a scheme.
func credentialHint(scheme string) string {
	switch scheme {
	case storage.SchemeS3:
		return "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE, or use an IAM role"
	case storage.SchemeGCS:
		return "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a key file"
	case storage.SchemeAzure:
		return "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or sign in with `az login`"
	}
	return ""
}

// storeError says what went wrong reading from storage and what to do.
func storeError(loc *storage.Location, objectURL string, err error) error {
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Errorf("%s is gone from storage (removed by retention or by hand?); only the CoreDump's metadata is left", objectURL)
	case loc.Scheme == storage.SchemeFile && errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("%s is a directory on the storage volume, and it does not exist on this machine: run the plugin where it is mounted, or pass --storage-url", loc.Bucket)
	case errors.Is(err, storage.ErrAccessDenied):
		return fmt.Errorf("%w: your credentials may not read %s; ask for read access to the bucket: %v", errNoCredentials, objectURL, err)
	case strings.Contains(msg, "credential") || errors.Is(err, storage.ErrCredentials):
		return fmt.Errorf("%w for %s: %s (%v)", errNoCredentials, loc.BucketURL(), credentialHint(loc.Scheme), err)
	}
	return fmt.Errorf("reading %s: %w", objectURL, err)
}

// errCorrupt: the stored object does not decompress.
var errCorrupt = errors.New("the stored object is corrupt")

// transfer is what copyVerified saw.
type transfer struct {
	// stored is the bytes read from storage; written the bytes written.
	stored, written int64
	// rawSize and sha256 describe the uncompressed dump.
	rawSize int64
	sha256  string
}

// copyVerified copies a stored object to dst, decompressed unless raw, and
// hashes the uncompressed dump on the way (with raw, by decompressing on
// the side).
func copyVerified(dst io.Writer, src io.Reader, c coredogv1.Compression, raw bool) (transfer, error) {
	var t transfer
	stored := &countingReader{r: src}
	h := sha256.New()
	var plain io.Reader = stored
	if raw {
		// The stored bytes go to dst as they are read for decompression.
		plain = io.TeeReader(stored, &countingWriter{w: dst, n: &t.written})
	}
	dec, err := decompress(plain, c)
	if err != nil {
		return t, err
	}
	defer dec.Close()
	var sink = io.MultiWriter(dst, h)
	var out *countingWriter
	if raw {
		sink = h
	} else {
		out = &countingWriter{w: sink, n: &t.written}
		sink = out
	}
	n, err := io.Copy(sink, dec)
	t.rawSize = n
	if err != nil {
		if c == coredogv1.CompressionZstd && isZstdError(err) || c == coredogv1.CompressionGzip && (errors.Is(err, gzip.ErrHeader) || errors.Is(err, gzip.ErrChecksum)) {
			return t, fmt.Errorf("%w: %s does not decompress: %v", errCorrupt, c, err)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return t, fmt.Errorf("%w: it ends early: %v", errCorrupt, err)
		}
		return t, err
	}
	if raw {
		// Whatever follows the compressed stream belongs to the object too.
		if _, err := io.Copy(io.Discard, plain); err != nil {
			return t, err
		}
	}
	t.stored = stored.n
	t.sha256 = hex.EncodeToString(h.Sum(nil))
	return t, nil
}

func isZstdError(err error) bool {
	for _, e := range []error{
		zstd.ErrMagicMismatch, zstd.ErrReservedBlockType, zstd.ErrCompressedSizeTooBig, zstd.ErrBlockTooSmall,
		zstd.ErrWindowSizeExceeded, zstd.ErrWindowSizeTooSmall, zstd.ErrDecoderSizeExceeded, zstd.ErrUnknownDictionary,
		zstd.ErrFrameSizeExceeded, zstd.ErrFrameSizeMismatch, zstd.ErrCRCMismatch,
	} {
		if errors.Is(err, e) {
			return true
		}
	}
	return strings.Contains(err.Error(), "zstd") || strings.Contains(err.Error(), "corrupt")
}

// checkIntegrity compares what was fetched with what the CoreDump recorded.
func checkIntegrity(t transfer, st *coredogv1.StorageStatus, specSize int64) error {
	if st.SHA256 != "" && !strings.EqualFold(t.sha256, st.SHA256) {
		return fmt.Errorf("%w: checksum mismatch: the dump's SHA-256 is %s, but the CoreDump records %s", errIntegrity, t.sha256, st.SHA256)
	}
	if specSize > 0 && t.rawSize != specSize {
		return fmt.Errorf("%w: size mismatch: the dump is %d bytes, but the CoreDump records %d", errIntegrity, t.rawSize, specSize)
	}
	return nil
}

func decompress(r io.Reader, c coredogv1.Compression) (io.ReadCloser, error) {
	if c == "" {
		c = coredogv1.CompressionNone
	}
	enc, ok := storage.EncodingOf(string(c))
	if !ok {
		return nil, fmt.Errorf("unknown compression %q; use --raw to fetch the object as it is", c)
	}
	d, err := enc.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errCorrupt, err)
	}
	return d, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

type countingWriter struct {
	w io.Writer
	n *int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	*c.n += int64(n)
	return n, err
}

// progress draws a one-line progress indicator on a terminal while its
// reader is read; nil draws nothing.
type progress struct {
	r     io.Reader
	w     io.Writer
	total int64
	n     int64
	label string
	now   func() time.Time
	last  time.Time
	drawn bool
}

func (p *progress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.n += int64(n)
	if t := p.now(); t.Sub(p.last) >= 200*time.Millisecond {
		p.last = t
		fmt.Fprintf(p.w, "\r%s", progressLine(p.label, p.n, p.total))
		p.drawn = true
	}
	return n, err
}

func (p *progress) done() {
	if p == nil || !p.drawn {
		return
	}
	fmt.Fprintf(p.w, "\r%s\n", progressLine(p.label, p.n, p.total))
}

// progressLine renders "NAME  12Mi / 41Mi  29%", padded so that a shorter
// line overwrites a longer one.
func progressLine(label string, n, total int64) string {
	s := fmt.Sprintf("Downloading %s  %s / %s", label, coredogv1.DisplaySize(n), coredogv1.DisplaySize(total))
	if total > 0 {
		pct := min(n*100/total, 100)
		s += fmt.Sprintf("  %3d%%", pct)
	}
	return fmt.Sprintf("%-70s", s)
}
