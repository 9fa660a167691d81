// Package serve is the agent's download endpoint: it hands the controller,
// over mutually authenticated TLS, the core files this agent registered, each
// compressed on the fly and followed by trailers giving the size and SHA-256
// of both the raw file as read and the body as sent: the controller records
// the first and checks the bytes it stores against the second. The crashed
// process's command line, which the CoreDump does not hold, goes with each
// download in a header (wire.CommandLineHeader).
//
// The protocol itself (routes, the encoding parameter and header, the
// trailers, the name rule) is internal/wire's, shared with the manager's
// client; this package owns the server side of it: the Registry of
// servable files, the HTTP routes (GET /v1/dumps/{name}, GET /v1/dumps/{name}/analysis for the
// backtraces computed at capture, GET /healthz), the checks made on every open (no symbolic
// links, no FIFOs, the same device and inode as registered), the per-request
// limits (parallel downloads, per-write deadlines) and reloading the TLS
// material from its mounted Secret directory.
//
// It must not touch anything it serves: files are opened read-only and never
// written, renamed or deleted (deletion belongs to the agent's quota and
// cleanup code), and it serves nothing that was not registered through
// Registry.Add, whatever path a request names. It must not log or otherwise
// expose dump contents, and it does not read or write Kubernetes objects.
package serve
