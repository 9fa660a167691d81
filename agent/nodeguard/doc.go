// Package nodeguard keeps core files from filling a node's disk, the way
// systemd-coredump's MaxUse and KeepFree do.
//
// It owns the decision of whether a new core may stay on the node under the
// policy's maxNodeUsage and minNodeFree (ParseMinFree reads the latter), and
// the count (Guard) of the bytes the admitted cores use, including deleting a
// core's file when the caller is done with it. The decision is a pure
// function; Guard adds a lock, a live statfs and os.Remove around it.
//
// It must not touch anything it was not handed: it never scans the core
// directory and never deletes a file to make room. A file goes only through
// DeleteFile or DeleteFileIf, which the caller calls when a CoreDump is final
// or deleted; the latter lets the caller check, right before the unlink, that
// the file is still the one it captured. It
// does not talk to the API server: turning a refusal into a CoreDump with
// reason QuotaExceeded, and removing the refused file, belong to the caller.
package nodeguard
