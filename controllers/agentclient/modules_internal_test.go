package agentclient

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestContentRange(t *testing.T) {
	for _, tc := range []struct {
		v            string
		start, total int64
		ok           bool
	}{
		{"bytes 0-0/1234", 0, 1234, true},
		{"bytes 64-127/4096", 64, 4096, true},
		{"bytes */4096", 0, 0, false},
		{"bytes -1-2/10", 0, 0, false},
		{"items 0-1/2", 0, 0, false},
		{"bytes 0-1/x", 0, 0, false},
		{"", 0, 0, false},
	} {
		s, total, ok := contentRange(tc.v)
		if ok != tc.ok || (ok && (s != tc.start || total != tc.total)) {
			t.Errorf("contentRange(%q) = %d, %d, %v", tc.v, s, total, ok)
		}
	}
}

// TestCheckedBodyRefusesAChangedModule is the attack of an agent that
// answers the ranged reads (which the build-id check reads) with one file
// and the whole fetch (which is stored) with another: the stream fails, so
// the store keeps nothing.
func TestCheckedBodyRefusesAChangedModule(t *testing.T) {
	file := bytes.Repeat([]byte("0123456789"), 1000)
	seen := []region{{off: 0, data: file[:64]}, {off: 5000, data: file[5000:5100]}}
	for _, tc := range []struct {
		name string
		body []byte
		ok   bool
	}{
		{"the same file", file, true},
		{"changed in a region read", append(append(append([]byte{}, file[:5050]...), 'X'), file[5051:]...), false},
		{"changed elsewhere", append(append(append([]byte{}, file[:3000]...), 'X'), file[3001:]...), true},
		{"longer", append(append([]byte{}, file...), 'X'), false},
		{"shorter", file[:len(file)-1], false},
	} {
		b := &checkedBody{body: io.NopCloser(bytes.NewReader(tc.body)), size: int64(len(file)), seen: seen}
		_, err := io.Copy(io.Discard, b)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrIntegrity)) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
