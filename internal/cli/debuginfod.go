package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
	"github.com/coredog/coredog/internal/buildid"
	"github.com/coredog/coredog/internal/storage"
)

// debuginfodHost is the only address the server binds: what it serves is
// read with the caller's own credentials, for the caller's own debugger.
const debuginfodHost = "127.0.0.1"

func debuginfodCommand() command {
	return command{
		name:    "debuginfod",
		args:    "[POLICY] [--port N] [flags]",
		summary: "Serve the stored binaries to gdb, eu-stack, delve and lldb as a debuginfod server on localhost.",
		help: `Serve the binaries CoreDog kept with the dumps (stored by build-id under
buildid/<BUILD-ID>/executable and buildid/<BUILD-ID>/debuginfo in a
policy's storage location) as a debuginfod server on 127.0.0.1, reading
the bucket with your own storage credentials (as download does). Point
DEBUGINFOD_URLS at it and the debugger fetches the exact executable and
libraries a core was made with, on a machine that has none of them:

  DEBUGINFOD_URLS=http://127.0.0.1:PORT gdb -c core

(gdb: add -iex 'set debuginfod enabled on' if it asks.) POLICY is the
CoreDumpPolicy whose storage is served; without one, the only policy in
the cluster. --storage-url serves a bucket URL (with its prefix) without
reading any policy. The server answers GET and HEAD of
/buildid/<BUILD-ID>/executable and /buildid/<BUILD-ID>/debuginfo, and 404
to everything else (source files are not kept). It runs until interrupted.

Examples:
  kubectl coredog debuginfod
  kubectl coredog debuginfod default --port 8002
  kubectl coredog debuginfod --storage-url 's3://cores/prod?region=eu-west-1'`,
		setup: func(fs *pflag.FlagSet) func(context.Context, *app, []string) error {
			var port int
			var storageURL string
			fs.IntVar(&port, "port", 0, "Port on 127.0.0.1 to serve on (0 picks a free one, printed).")
			fs.StringVar(&storageURL, "storage-url", "", "Bucket URL with its options and prefix, instead of the policy's spec.storage.url.")
			return func(ctx context.Context, a *app, args []string) error {
				if len(args) > 1 {
					return fmt.Errorf("%w: debuginfod takes at most one CoreDumpPolicy name", errUsage)
				}
				if port < 0 || port > 65535 {
					return fmt.Errorf("%w: --port %d is not a port", errUsage, port)
				}
				policy := ""
				if len(args) == 1 {
					policy = args[0]
				}
				return a.debuginfod(ctx, policy, storageURL, port)
			}
		},
	}
}

func (a *app) debuginfod(ctx context.Context, policy, storageURL string, port int) error {
	loc, err := a.policyLocation(ctx, policy, storageURL)
	if err != nil {
		return err
	}
	creds, err := CredsFromEnv(loc.Scheme, a.getenv)
	if err != nil {
		return err
	}
	store, err := a.openStore(ctx, loc, creds)
	if err != nil {
		return storeError(loc, loc.BucketURL(), err)
	}
	defer store.Close()
	ln, err := net.Listen("tcp", net.JoinHostPort(debuginfodHost, strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("listening on %s port %d: %w", debuginfodHost, port, err)
	}
	url := "http://" + ln.Addr().String()
	fmt.Fprintf(a.stdout, "Serving the binaries stored in %s at %s (interrupt to stop).\n", safe(loc.BucketURL()+"/"+loc.Prefix), url)
	fmt.Fprintf(a.stdout, "export DEBUGINFOD_URLS=%s\n", url)
	return ServeDebuginfod(ctx, ln, store, a.stderr)
}

// policyLocation is the storage location (with its prefix) of a policy:
// the one named, or the only one; storageURL overrides both.
func (a *app) policyLocation(ctx context.Context, policy, storageURL string) (*storage.Location, error) {
	raw := storageURL
	if raw == "" {
		c, err := a.client()
		if err != nil {
			return nil, err
		}
		var p coredogv1.CoreDumpPolicy
		if policy != "" {
			if err := c.Get(ctx, client.ObjectKey{Name: policy}, &p); err != nil {
				return nil, apiError(err, "reading CoreDumpPolicy "+policy)
			}
		} else {
			var list coredogv1.CoreDumpPolicyList
			if err := c.List(ctx, &list); err != nil {
				return nil, apiError(err, "listing CoreDumpPolicies")
			}
			if len(list.Items) != 1 {
				names := make([]string, 0, len(list.Items))
				for _, p := range list.Items {
					names = append(names, p.Name)
				}
				return nil, fmt.Errorf("%w: there are %d CoreDumpPolicies (%s): name one, or pass --storage-url", errUsage, len(names), strings.Join(names, ", "))
			}
			p = list.Items[0]
		}
		raw = p.Spec.Storage.URL
	}
	loc, err := storage.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("storage URL: %w", err)
	}
	readOnly(loc)
	return loc, nil
}

// ServeDebuginfod serves store's build-id layout on ln until ctx is done.
// Every request is logged to logw, one line each.
func ServeDebuginfod(ctx context.Context, ln net.Listener, store storage.Store, logw io.Writer) error {
	srv := &http.Server{
		Handler:           &debuginfodHandler{store: store, log: logw, port: portOf(ln.Addr())},
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func portOf(addr net.Addr) string {
	_, port, _ := net.SplitHostPort(addr.String())
	return port
}

type debuginfodHandler struct {
	store storage.Store
	log   io.Writer
	port  string
}

// ServeHTTP answers /buildid/<id>/executable and /buildid/<id>/debuginfo;
// everything else is 404. A request whose Host is not this server's
// loopback address is refused: a web page the user visits could otherwise
// reach it through a DNS name rebound to 127.0.0.1 and read the binaries.
func (h *debuginfodHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.loopbackHost(r.Host) {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	key, id, kind, ok := buildIDRequest(r)
	if !ok {
		http.NotFound(w, r)
		return
	}
	info, err := h.store.Stat(r.Context(), key)
	if err != nil {
		h.fail(w, id, kind, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/octet-stream")
	hdr.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	hdr.Set("X-Debuginfod-Size", strconv.FormatInt(info.Size, 10))
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return
	}
	rc, err := h.store.Read(r.Context(), key)
	if err != nil {
		hdr.Del("Content-Length")
		hdr.Del("X-Debuginfod-Size")
		h.fail(w, id, kind, err)
		return
	}
	defer rc.Close()
	w.WriteHeader(http.StatusOK)
	// Streamed: an executable with its debug info can be gigabytes. A
	// copy cut short leaves a short body, which the client refuses.
	n, err := io.Copy(w, storage.CtxReader{Ctx: r.Context(), R: io.LimitReader(rc, info.Size)})
	if err != nil {
		fmt.Fprintf(h.log, "Serving the %s of build-id %s stopped after %d bytes: %v\n", kind, id, n, err)
		return
	}
	fmt.Fprintf(h.log, "Served the %s of build-id %s (%s)\n", kind, id, coredogv1.DisplaySize(n))
}

func (h *debuginfodHandler) fail(w http.ResponseWriter, id, kind string, err error) {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		http.NotFound(w, nil)
	case errors.Is(err, storage.ErrAccessDenied):
		fmt.Fprintf(h.log, "Your credentials may not read the %s of build-id %s: %v\n", kind, id, err)
		http.Error(w, "forbidden by the store", http.StatusForbidden)
	default:
		fmt.Fprintf(h.log, "Reading the %s of build-id %s: %v\n", kind, id, err)
		http.Error(w, "the store failed", http.StatusBadGateway)
	}
}

// loopbackHost says whether a request's Host names this server on loopback.
func (h *debuginfodHandler) loopbackHost(host string) bool {
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		name, port = host, ""
	}
	if port != "" && port != h.port {
		return false
	}
	switch strings.ToLower(name) {
	case debuginfodHost, "localhost", "::1":
		return true
	}
	return false
}

// buildIDRequest parses /buildid/<id>/<kind> strictly: no escapes, no
// other segments, a build-id of bounded hex, kind executable or debuginfo.
func buildIDRequest(r *http.Request) (key, id, kind string, ok bool) {
	if r.URL.RawPath != "" || r.URL.RawQuery != "" {
		return "", "", "", false
	}
	parts := strings.Split(r.URL.Path, "/")
	if len(parts) != 4 || parts[0] != "" || parts[1] != "buildid" {
		return "", "", "", false
	}
	key, ok = buildid.KeyFor(parts[2], parts[3])
	if !ok {
		return "", "", "", false
	}
	return key, strings.ToLower(parts[2]), parts[3], true
}
