package buildid

import (
	"strings"
	"testing"
)

func TestKeyFor(t *testing.T) {
	id := strings.Repeat("ab", 20)
	for _, tc := range []struct {
		id, kind, want string
	}{
		{id, Executable, "buildid/" + id + "/executable"},
		{strings.ToUpper(id), DebugInfo, "buildid/" + id + "/debuginfo"},
		{"01234567", Executable, "buildid/01234567/executable"},
		{strings.Repeat("a", MaxLen), Executable, "buildid/" + strings.Repeat("a", MaxLen) + "/executable"},
		{id, "source", ""},
		{id, "executable/../x", ""},
		{"0123456", Executable, ""},
		{"012345", Executable, ""},
		{strings.Repeat("a", MaxLen+2), Executable, ""},
		{"../../etc/passwd", Executable, ""},
		{strings.Repeat("g", 40), Executable, ""},
		{id[:38] + "/.", Executable, ""},
		{"", Executable, ""},
	} {
		got, ok := KeyFor(tc.id, tc.kind)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("KeyFor(%q, %q) = %q, %v; want %q", tc.id, tc.kind, got, ok, tc.want)
		}
	}
}
