// Package detect finds complete core files in the agent's host core directory.
//
// It owns one question: which regular files under Options.Dir are finished
// core dumps that nobody has been told about yet. It answers it by watching
// the tree with fsnotify, rescanning it at start, on a timer and after any
// watch error, and by holding every file back until it has stopped changing
// (or until the process that dumped it is gone). Without a process to check,
// a file that is shorter than the size it declares (a core's program headers
// say where it ends; the caller reads that, through Options.DeclaredSize) is
// held until it reaches it, or until it has been still for the much longer
// CutQuietTime. Each complete file is emitted once per identity (device,
// inode, ctime, size); a file that changes after it was emitted is emitted
// again, naming the identity it supersedes (File.Previous).
//
// It must not touch the files: it never opens, reads, renames, changes or
// deletes anything under Dir or ProcRoot itself, and it follows no symbolic
// links.
// Reading, parsing, serving and deleting core files belong to other packages
// of the agent, which call Forget after deleting a file.
//
// Names that start with "." are ignored, files and directories alike, so a
// writer that wants to be ignored until it is done (a core_pattern pipe
// helper, a test) can write ".name" and rename it into place.
package detect
