//go:build !linux

package storage

// getPart returns a buffer of size bytes, for putPart when it is no longer
// used. (On Linux, where the manager runs, buffers live outside the Go
// heap: partbuf_linux.go.)
func getPart(size int) *[]byte {
	b := make([]byte, size)
	partsHeld.add(size)
	return &b
}

// putPart takes back a buffer from getPart.
func putPart(b *[]byte) { partsHeld.add(-len(*b)) }
