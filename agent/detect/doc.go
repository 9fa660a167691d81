// Package detect finds complete core files in the agent's host core directory.
//
// It owns one question: which regular files under Options.Dir are finished
// core dumps that nobody has been told about yet. It answers it by watching
// the tree with fsnotify, rescanning it at start, on a timer and after any
// watch error, and by holding every file back until it has stopped changing
// (or until the process that dumped it is gone). Each complete file is
// emitted once per identity (device, inode, ctime, size).
//
// It must not touch the files: it never opens, reads, renames, changes or
// deletes anything under Dir or ProcRoot, and it follows no symbolic links.
// Reading, parsing, serving and deleting core files belong to other packages
// of the agent, which call Forget after deleting a file.
//
// Names that start with "." are ignored, files and directories alike, so a
// writer that wants to be ignored until it is done (a core_pattern pipe
// helper, a test) can write ".name" and rename it into place.
package detect
