package storage

import (
	"fmt"
	"strconv"
	"strings"
)

// Objects written by earlier versions went through gocloud.dev/blob, which
// stored some characters of keys (Azure, file://) and of Azure metadata
// keys as "__0x<hex>__". The same escaping is kept here so that those
// objects are found under the same keys, and ours read back through
// gocloud.

// hexEscape replaces the runes of s for which escape says so, and any text
// that hexUnescape would take for an escape sequence, with "__0x<hex>__".
func hexEscape(s string, escape func(r []rune, i int) bool) string {
	runes := []rune(s)
	var b strings.Builder
	changed := false
	for i, r := range runes {
		if escape(runes, i) || isHexEscape(runes, i) {
			if !changed {
				b.Grow(len(s) + 16)
				b.WriteString(string(runes[:i]))
				changed = true
			}
			fmt.Fprintf(&b, "__%#x__", r)
		} else if changed {
			b.WriteRune(r)
		}
	}
	if !changed {
		return s
	}
	return b.String()
}

// isHexEscape says whether an escape sequence starts at r[i].
func isHexEscape(r []rune, i int) bool {
	_, _, ok := hexUnescapeAt(r, i)
	return ok
}

// hexUnescapeAt decodes the escape sequence at r[i], returning the rune and
// the index of its last rune.
func hexUnescapeAt(r []rune, i int) (rune, int, bool) {
	const open = "__0x"
	if len(r)-i < len(open) || string(r[i:i+len(open)]) != open {
		return 0, 0, false
	}
	j := i + len(open)
	start := j
	for j < len(r) && r[j] != '_' {
		j++
	}
	if j+1 >= len(r) || r[j+1] != '_' {
		return 0, 0, false
	}
	v, err := strconv.ParseInt(string(r[start:j]), 16, 32)
	if err != nil {
		return 0, 0, false
	}
	return rune(v), j + 1, true
}

// hexUnescape reverses hexEscape.
func hexUnescape(s string) string {
	if !strings.Contains(s, "__0x") {
		return s
	}
	runes := []rune(s)
	var b strings.Builder
	for i := 0; i < len(runes); i++ {
		if r, end, ok := hexUnescapeAt(runes, i); ok {
			b.WriteRune(r)
			i = end
			continue
		}
		b.WriteRune(runes[i])
	}
	return b.String()
}

// fileKeyPath escapes a checked key as fileblob did on Linux. Checked keys
// have no control characters, no empty or .. segments and no trailing
// slash, so only text that looks like an escape sequence is escaped.
func fileKeyPath(key string) string {
	return hexEscape(key, func([]rune, int) bool { return false })
}

// azureBlobName escapes a checked key as gocloud's azureblob did: Azure
// mishandles backslashes, quotes, '#', '%' and '?' in blob names.
func azureBlobName(key string) string {
	return hexEscape(key, func(r []rune, i int) bool {
		switch c := r[i]; {
		case c == '\\', c < 32, c == '"', c == '#', c == '%', c == '?', c == 127:
			return true
		case i > 1 && c == '/' && r[i-1] == '.' && r[i-2] == '.':
			return true
		}
		return false
	})
}

// azureMetadataKey escapes a metadata key as gocloud's azureblob did: Azure
// metadata names are C# identifiers.
func azureMetadataKey(k string) string {
	return hexEscape(k, func(r []rune, i int) bool {
		c := r[i]
		switch {
		case i == 0 && c >= '0' && c <= '9':
			return true
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
			return false
		}
		return true
	})
}
