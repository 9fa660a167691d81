// Package nodeguard keeps core files from filling a node's disk, the way
// systemd-coredump's MaxUse and KeepFree do.
//
// It owns two things: the decision (Plan) of whether a new core may stay on
// the node and which already uploaded cores must go first to make room, and
// the bookkeeping (Guard) of the core files the agent has registered, including
// deleting them. Plan is a pure function; Guard adds a lock, a live statfs and
// os.Remove around it.
//
// It must not touch anything it was not handed: it never scans the core
// directory, never deletes a file that is not tracked, and never deletes a
// tracked file to make room unless that file's CoreDump is Uploaded or Skipped
// (DeleteFile, which the caller calls when a CoreDump is finished or deleted,
// is the only other way a file goes). It does not talk to the API server:
// turning a refusal into a CoreDump with reason QuotaExceeded, and removing
// the refused file, belong to the caller.
package nodeguard
