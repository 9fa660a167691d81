package wire

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestValidName(t *testing.T) {
	cases := []struct {
		name string
		want bool
	}{
		{"core-1", true},
		{"p1.node-a.core-12345", true},
		{"a", true},
		{"0", true},
		{string(make([]byte, 0)), false},
		{"-a", false},
		{"a-", false},
		{"a..b", false},
		{".a", false},
		{"a.", false},
		{"..", false},
		{"../etc/passwd", false},
		{"a/b", false},
		{"a%2Fb", false},
		{"a\x00b", false},
		{"Core", false},
		{"a_b", false},
		{"a b", false},
		{"ä", false},
		{string(make253('a')), true},
		{string(make253('a')) + "a", false},
	}
	for _, tc := range cases {
		if got := ValidName(tc.name); got != tc.want {
			t.Errorf("ValidName(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func make253(c byte) []byte {
	b := make([]byte, maxNameLen)
	for i := range b {
		b[i] = c
	}
	return b
}

func FuzzValidName(f *testing.F) {
	for _, s := range []string{"core-1", "a.b", "../x", "a%2Fb", "a\x00", "-", "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if !ValidName(name) {
			return
		}
		if len(name) > maxNameLen {
			t.Fatal("accepted a name over 253 bytes")
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			if c == '/' || c == 0 || c == '%' || c == '\\' || (c >= 'A' && c <= 'Z') || c >= 0x80 {
				t.Fatalf("accepted %q", name)
			}
		}
		if name == "." || name == ".." || filepath.Base(name) != name || filepath.Clean(name) != name {
			t.Fatalf("accepted a path-like name %q", name)
		}
		for i := 0; i+1 < len(name); i++ {
			if name[i] == '.' && name[i+1] == '.' {
				t.Fatalf("accepted %q with ..", name)
			}
		}
	})
}

func TestParseCompression(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Compression
		ok   bool
	}{
		{"", CompressionZstd, true},
		{"zstd", CompressionZstd, true},
		{"gzip", CompressionGzip, true},
		{"none", CompressionNone, true},
		{"Zstd", "", false},
		{"br", "", false},
	} {
		got, ok := ParseCompression(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseCompression(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFromAPI(t *testing.T) {
	for api, want := range map[coredogv1.Compression]Compression{
		coredogv1.CompressionZstd: CompressionZstd,
		coredogv1.CompressionGzip: CompressionGzip,
		coredogv1.CompressionNone: CompressionNone,
		"":                        CompressionZstd,
	} {
		if got := FromAPI(api); got != want {
			t.Errorf("FromAPI(%q) = %q, want %q", api, got, want)
		}
	}
}

func TestStreamChecked(t *testing.T) {
	for _, tc := range []struct {
		name     string
		declared []string
		want     bool
	}{
		{"all four", []string{RawSizeTrailer, RawSHA256Trailer, StreamSizeTrailer, StreamCRC32CTrailer}, true},
		{"raw only, an older agent", []string{RawSizeTrailer, RawSHA256Trailer}, false},
		{"size without checksum", []string{RawSizeTrailer, RawSHA256Trailer, StreamSizeTrailer}, false},
		{"none", nil, false},
	} {
		h := http.Header{}
		for _, k := range tc.declared {
			h[http.CanonicalHeaderKey(k)] = nil
		}
		if got := StreamChecked(h); got != tc.want {
			t.Errorf("%s: StreamChecked = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestFramed(t *testing.T) {
	for _, tc := range []struct {
		name          string
		c             Compression
		head          []byte
		sent, rawSize int64
		want          bool
	}{
		{"zstd frame", CompressionZstd, []byte{0x28, 0xb5, 0x2f, 0xfd}, 10, 100, true},
		{"zstd, empty file", CompressionZstd, nil, 0, 0, true},
		{"zstd, gzip bytes", CompressionZstd, []byte{0x1f, 0x8b, 8, 0}, 10, 100, false},
		{"zstd, nothing sent for a file", CompressionZstd, nil, 0, 5, false},
		{"gzip member", CompressionGzip, []byte{0x1f, 0x8b, 8, 0}, 10, 100, true},
		{"gzip, raw bytes", CompressionGzip, []byte("core"), 10, 100, false},
		{"none, whole", CompressionNone, []byte("core"), 100, 100, true},
		{"none, short", CompressionNone, []byte("core"), 99, 100, false},
	} {
		if got := tc.c.Framed(tc.head, tc.sent, tc.rawSize); got != tc.want {
			t.Errorf("%s: Framed = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestCommandLineHeader(t *testing.T) {
	long := strings.Repeat("a", MaxCommandLine+10)
	for _, tc := range []struct {
		name, raw string
		// want is what the manager keeps: raw through the header, made safe.
		want string
	}{
		{"plain", "/usr/bin/server --port 8080", "/usr/bin/server --port 8080"},
		{"empty", "", ""},
		{"a secret", "db --password=hunter2", "db --password=hunter2"},
		{"header injection", "x\r\nX-Coredog-Raw-Size: 1\r\n", `x\x0d\x0aX-Coredog-Raw-Size: 1\x0d\x0a`},
		{"terminal escapes and NUL", "x\x1b[2Jy\x00z\x7f", `x\x1b[2Jy\x00z\x7f`},
		{"invalid UTF-8", "caf\xe9 \xff", `caf\xe9 \xff`},
		{"valid UTF-8 and percent signs", "naïve 100% %41 +", "naïve 100% %41 +"},
		{"cut at the bound", long, long[:MaxCommandLine]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			enc := EncodeCommandLine(tc.raw)
			for _, c := range []byte(enc) {
				if c <= ' ' || c >= 0x7f {
					t.Fatalf("encoded value %q holds byte %#x, which a header may not", enc, c)
				}
			}
			raw, ok := DecodeCommandLine(enc)
			if !ok {
				t.Fatalf("DecodeCommandLine(%q) refused", enc)
			}
			if got := SafeCommandLine(raw); got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDecodeCommandLineRefusesWhatNoAgentSends(t *testing.T) {
	for _, tc := range []struct{ name, v string }{
		{"bad escape", "%zz"},
		{"cut escape", "abc%4"},
		{"over the bound decoded", strings.Repeat("a", MaxCommandLine+1)},
		{"over the bound encoded", strings.Repeat("%41", MaxCommandLine+1)},
		{"huge", strings.Repeat("a", 1<<20)},
	} {
		if raw, ok := DecodeCommandLine(tc.v); ok {
			t.Errorf("%s: decoded to %d bytes, want refusal", tc.name, len(raw))
		}
	}
}

// FuzzDecodeCommandLine: whatever an agent sends, what the manager keeps is
// bounded, valid UTF-8 and free of control characters.
func FuzzDecodeCommandLine(f *testing.F) {
	for _, s := range []string{"", "a+b", "%00%1b%5B2J", "%zz", "%e9", strings.Repeat("%41", 400)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		raw, ok := DecodeCommandLine(v)
		if !ok {
			return
		}
		if len(raw) > MaxCommandLine {
			t.Fatalf("decoded %d bytes", len(raw))
		}
		safe := SafeCommandLine(raw)
		if !utf8.ValidString(safe) || len(safe) > 4*MaxCommandLine {
			t.Fatalf("unsafe result %q", safe)
		}
		for _, r := range safe {
			if r != ' ' && !unicode.IsPrint(r) {
				t.Fatalf("control character %U in %q", r, safe)
			}
		}
	})
}
