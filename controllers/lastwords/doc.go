// Package lastwords keeps what a crashed container said before it died and
// what its pod looked like: the log of the run that crashed, bounded to its
// last MaxLines lines and MaxBytes bytes, and a snapshot of the pod's spec
// and status with environment values and secret-looking arguments
// redacted. It decides which run's log that is (the current one, or the
// previous one once the kubelet restarted the container) from the pod's
// status alone, and never guesses: without evidence of which run crashed it
// fetches nothing. It owns no storage and no CoreDump status; the uploader
// stores what it returns next to the dump.
package lastwords
