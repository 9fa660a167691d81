package storage

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// Encoding is how a stored dump's bytes are encoded: what its key ends in,
// the content type it is stored with and how to decode it. Objects already
// stored carry these extensions and types, so they never change.
type Encoding struct {
	// Compression is the API's name for it (spec.storage.compression).
	Compression string
	// Ext ends the dump's key.
	Ext string
	// ContentType is the dump object's Content-Type.
	ContentType string
}

// The encodings a dump is stored with. The names are the API's
// compression values; this package does not import the API.
var (
	EncodingZstd = Encoding{Compression: "Zstd", Ext: ".zst", ContentType: "application/zstd"}
	EncodingGzip = Encoding{Compression: "Gzip", Ext: ".gz", ContentType: "application/gzip"}
	EncodingNone = Encoding{Compression: "None", Ext: ".core", ContentType: "application/octet-stream"}
)

var encodings = []Encoding{EncodingZstd, EncodingGzip, EncodingNone}

// EncodingOf returns the encoding of an API compression value, or false
// for any other (including ""; the caller applies the API's default).
func EncodingOf(compression string) (Encoding, bool) {
	for _, e := range encodings {
		if e.Compression == compression {
			return e, true
		}
	}
	return Encoding{}, false
}

// EncodingOfKey guesses a dump's encoding from its key's extension, for
// dumps whose status does not record it; a key without a known extension
// is taken as not encoded.
func EncodingOfKey(key string) Encoding {
	for _, e := range encodings {
		if strings.HasSuffix(key, e.Ext) {
			return e
		}
	}
	return EncodingNone
}

// NewReader decodes r, a stored dump in this encoding. zstd decodes in one
// goroutine: a download is one stream, and more goroutines only buffer
// more blocks ahead.
func (e Encoding) NewReader(r io.Reader) (io.ReadCloser, error) {
	switch e.Compression {
	case EncodingZstd.Compression:
		d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return d.IOReadCloser(), nil
	case EncodingGzip.Compression:
		g, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return g, nil
	case EncodingNone.Compression:
		return io.NopCloser(r), nil
	}
	return nil, fmt.Errorf("unknown encoding %q", e.Compression)
}

// Metadata keys of a stored dump (WriteOptions.Metadata).
const (
	// MetadataCoreDump is the name of the CoreDump the object holds.
	MetadataCoreDump = "coredump"
	// MetadataNode is the node the dump was taken on.
	MetadataNode = "node"
	// MetadataCoreDumpUID is the UID of the CoreDump the object holds:
	// names of deleted objects come back, UIDs never do. Objects written
	// before it was recorded have the name and node only.
	MetadataCoreDumpUID = "coredump_uid"
)

// sidecarExt ends the key of the JSON document next to a dump.
const sidecarExt = ".json"

// SidecarKey is the key of the JSON document stored next to the dump at
// key (the CoreDump's spec and status): the dump's key without its
// encoding's extension, plus .json.
func SidecarKey(key string) string {
	for _, e := range encodings {
		if k, ok := strings.CutSuffix(key, e.Ext); ok {
			return k + sidecarExt
		}
	}
	return key + sidecarExt
}

// ContentTypeJSON is the sidecar's Content-Type.
const ContentTypeJSON = "application/json"

// logExt ends the key of the crashed container's log.
const logExt = ".log"

// LogKey is the key of the crashed container's log stored next to the dump
// at key: the dump's key without its encoding's extension, plus .log.
func LogKey(key string) string {
	return strings.TrimSuffix(SidecarKey(key), sidecarExt) + logExt
}

// MaxLogBytes bounds the stored log: the manager stores at most this much,
// and readers read no more.
const MaxLogBytes = 64 << 10

// ContentTypeLog is the stored log's Content-Type.
const ContentTypeLog = "text/plain; charset=utf-8"

// CtxReader fails reads once Ctx is done, so that a copy stops as soon as
// it is cancelled whatever its source does with contexts: a cancelled
// write does not keep draining its source into a temp file nobody keeps,
// and an interrupted download stops reading.
type CtxReader struct {
	Ctx context.Context
	R   io.Reader
}

func (c CtxReader) Read(p []byte) (int, error) {
	if err := c.Ctx.Err(); err != nil {
		return 0, err
	}
	return c.R.Read(p)
}
