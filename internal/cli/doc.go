// Package cli is the kubectl-coredog plugin: `list`, `describe`, `download`,
// `debug` and `status` over CoreDumps, CoreDumpPolicies and the agents'
// Leases. cmd/kubectl-coredog only calls Run; everything a test needs is
// here, with the decisions (filters, grouping, rendering, where a dump is
// stored, which credentials to use) as pure functions over API objects.
//
// It reads the cluster with the caller's kubeconfig and reads storage with
// the caller's own credentials (the cloud's default chain, or AWS_* and
// AZURE_STORAGE_* variables), never with the controller's Secret: people who
// may read a dump's metadata need not be allowed to read the dump. It writes
// nothing to the cluster except the debug Pod that `debug --run` creates.
//
// Dumps hold process memory: downloaded files are created 0600, appear under
// their final name only once their SHA-256 matched, and never overwrite a
// file unless asked to. Values that came from a node (executable names,
// command lines, file names) are escaped before they reach a terminal.
package cli
