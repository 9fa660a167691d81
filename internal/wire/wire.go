// Package wire is the download protocol between a node agent and the
// manager: the routes, the query parameter and header that name a stream's
// encoding, the trailers that prove what was sent, the header that carries
// the crashed process's command line (and its bounds and escaping), the
// name rule for dumps, the routes and list format of a dump's modules and
// their files by build-id (modules.go), and the mapping from the API's
// compression to the wire's. The agent's
// server (agent/serve) and the manager's client (controllers/agentclient)
// both import it, so that neither links the other.
//
// It holds names and small pure functions only: it must not open files,
// make requests or encode streams.
package wire

import (
	"bytes"
	"fmt"
	"hash"
	"hash/crc32"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

// Routes, parameters and headers of the download protocol.
const (
	// DumpsPath is the route of a dump: GET DumpsPath + name.
	DumpsPath = "/v1/dumps/"
	// HealthPath answers 200 while the agent serves.
	HealthPath = "/healthz"

	// CompressionParam selects the stream encoding; see the Compression constants.
	CompressionParam = "compression"
	// CompressionHeader says how the body is encoded. Content-Encoding is
	// deliberately not used: HTTP clients decode that transparently, and the
	// manager wants to store the compressed bytes as they are.
	CompressionHeader = "X-Coredog-Compression"
	// RawSizeTrailer is the number of bytes read from the file, in decimal.
	RawSizeTrailer = "X-Coredog-Raw-Size"
	// RawSHA256Trailer is the hex SHA-256 of the bytes read from the file.
	RawSHA256Trailer = "X-Coredog-Raw-Sha256"
	// StreamSizeTrailer is the number of body bytes sent (the encoded
	// stream), in decimal.
	StreamSizeTrailer = "X-Coredog-Stream-Size"
	// StreamCRC32CTrailer is the CRC-32C (Castagnoli) of the body as sent,
	// as 8 hex digits (NewStreamChecksum). With it and StreamSizeTrailer the
	// manager checks the bytes it stores without decoding them; TLS already
	// authenticates every byte, so this guards only against a stream changed
	// by a bug on either side (framing, buffering).
	StreamCRC32CTrailer = "X-Coredog-Stream-Crc32c"
	// CommandLineHeader carries the crashed process's arguments as the
	// core's notes give them (NT_PRPSINFO pr_psargs), percent-encoded by
	// EncodeCommandLine. They travel only here, to the manager, which
	// writes them into the stored metadata: arguments can hold secrets
	// (--password=...), and every agent token can list and watch every
	// node's CoreDumps, so they are never part of the CoreDump object.
	CommandLineHeader = "X-Coredog-Command-Line"
)

// MaxCommandLine bounds the command line in bytes, before encoding. The
// kernel keeps 80 bytes of arguments in a core (ELF_PRARGSZ, with its NUL);
// the bound leaves room for other producers without letting an agent send
// an unbounded header.
const MaxCommandLine = 1024

// Trailers is the value of a download's Trailer header: every trailer is
// declared before the body, so that a client can tell a stream that ends
// without them (cut short) from an agent that never sends them.
var Trailers = strings.Join([]string{RawSizeTrailer, RawSHA256Trailer, StreamSizeTrailer, StreamCRC32CTrailer}, ", ")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// NewStreamChecksum returns the hash whose Sum, in hex, StreamCRC32CTrailer
// carries.
func NewStreamChecksum() hash.Hash32 { return crc32.New(castagnoli) }

// StreamChecked reports whether a response declared the stream trailers
// before its body (its Trailer header, as net/http's client exposes it in
// Response.Trailer before the body is read). Agents from before the stream
// trailers declare only the raw ones: their streams are checked by decoding
// them and comparing the raw size and SHA-256.
func StreamChecked(declared http.Header) bool {
	for _, k := range []string{StreamSizeTrailer, StreamCRC32CTrailer} {
		if _, ok := declared[http.CanonicalHeaderKey(k)]; !ok {
			return false
		}
	}
	return true
}

// Compression is a stream encoding the agent offers.
type Compression string

// Compressions the agent offers; CompressionZstd is the default.
const (
	CompressionZstd Compression = "zstd"
	CompressionGzip Compression = "gzip"
	CompressionNone Compression = "none"
)

// ZstdWindow is the window agents encode with; MaxZstdWindow bounds the
// memory a (possibly hostile) stream can make a decoder take.
const (
	ZstdWindow    = 1 << 20
	MaxZstdWindow = 8 << 20
)

// ParseCompression reads the CompressionParam of a request; empty means
// zstd.
func ParseCompression(v string) (Compression, bool) {
	switch Compression(v) {
	case "", CompressionZstd:
		return CompressionZstd, true
	case CompressionGzip, CompressionNone:
		return Compression(v), true
	}
	return "", false
}

// FromAPI is the wire encoding that stores a dump in c; anything but gzip
// and none is zstd, the API's default.
func FromAPI(c coredogv1.Compression) Compression {
	switch c {
	case coredogv1.CompressionGzip:
		return CompressionGzip
	case coredogv1.CompressionNone:
		return CompressionNone
	default:
		return CompressionZstd
	}
}

// Magic numbers that start a zstd frame and a gzip member.
var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// MagicLen is how many leading bytes of a stream Framed needs.
const MagicLen = 4

// Framed reports whether a stream of sent bytes that starts with head is
// framed as c encodes a file of rawSize bytes: the check that remains
// without decoding. It catches an agent sending the wrong encoding, not a
// corrupt encoder. An unencoded stream is framed when its length is the raw
// size; the caller compares its SHA-256 too.
func (c Compression) Framed(head []byte, sent, rawSize int64) bool {
	switch c {
	case CompressionNone:
		return sent == rawSize
	case CompressionGzip:
		return bytes.HasPrefix(head, gzipMagic)
	default:
		// The encoder writes nothing at all for an empty file.
		return bytes.HasPrefix(head, zstdMagic) || sent == 0 && rawSize == 0
	}
}

// maxNameLen is the longest DNS-1123 subdomain, and so the longest CoreDump name.
const maxNameLen = 253

// ValidName reports whether name is a DNS-1123 subdomain (lower-case
// alphanumeric labels, inner '-', separated by single dots), the shape of a
// CoreDump name. Anything else, including '/', "..", NUL and escapes, is not
// looked up at all.
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > maxNameLen {
		return false
	}
	labelStart := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '.' {
			c := name[i]
			if !isAlnum(c) && c != '-' {
				return false
			}
			continue
		}
		// End of a label: it must be non-empty and start and end alphanumeric.
		if i == labelStart || !isAlnum(name[labelStart]) || !isAlnum(name[i-1]) {
			return false
		}
		labelStart = i + 1
	}
	return true
}

func isAlnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')
}

// EncodeCommandLine is the CommandLineHeader value of a command line:
// percent-encoded (any byte may be in it, and a header may hold none but
// visible ASCII), cut at MaxCommandLine bytes first.
func EncodeCommandLine(raw string) string {
	if len(raw) > MaxCommandLine {
		raw = raw[:MaxCommandLine]
	}
	return url.QueryEscape(raw)
}

// DecodeCommandLine reads a CommandLineHeader value, which an agent wrote:
// longer than MaxCommandLine encoded bytes could be, not percent-encoded, or
// over MaxCommandLine decoded bytes is refused. What it returns is bytes as
// the process gave them; SafeCommandLine makes them fit to store and show.
func DecodeCommandLine(v string) (string, bool) {
	if len(v) > 3*MaxCommandLine {
		return "", false
	}
	raw, err := url.QueryUnescape(v)
	if err != nil || len(raw) > MaxCommandLine {
		return "", false
	}
	return raw, true
}

// SafeCommandLine keeps printable UTF-8 and spaces as they are and writes
// every other byte (invalid UTF-8, NUL, control characters, DEL) as \xNN,
// as agents write the names they read: a command line comes from the
// crashed process and ends up in JSON files, terminals and logs.
func SafeCommandLine(raw string) string {
	var b strings.Builder
	for i := 0; i < len(raw); {
		r, size := utf8.DecodeRuneInString(raw[i:])
		if (r == utf8.RuneError && size == 1) || (r != ' ' && !unicode.IsPrint(r)) {
			for _, c := range []byte(raw[i : i+size]) {
				fmt.Fprintf(&b, `\x%02x`, c)
			}
		} else {
			b.WriteString(raw[i : i+size])
		}
		i += size
	}
	return b.String()
}
