package storage

import (
	"strings"
	"testing"
)

func TestBuildIDKey(t *testing.T) {
	id := strings.Repeat("ab", 20)
	for _, tc := range []struct {
		id, kind, want string
	}{
		{id, BuildIDExecutable, "buildid/" + id + "/executable"},
		{strings.ToUpper(id), BuildIDDebuginfo, "buildid/" + id + "/debuginfo"},
		{"01234567", BuildIDExecutable, "buildid/01234567/executable"},
		{strings.Repeat("a", MaxBuildIDHex), BuildIDExecutable, "buildid/" + strings.Repeat("a", MaxBuildIDHex) + "/executable"},
		{id, "source", ""},
		{id, "executable/../x", ""},
		{"0123456", BuildIDExecutable, ""},
		{"012345", BuildIDExecutable, ""},
		{strings.Repeat("a", MaxBuildIDHex+2), BuildIDExecutable, ""},
		{"../../etc/passwd", BuildIDExecutable, ""},
		{strings.Repeat("g", 40), BuildIDExecutable, ""},
		{id[:38] + "/.", BuildIDExecutable, ""},
		{"", BuildIDExecutable, ""},
	} {
		got, ok := BuildIDKey(tc.id, tc.kind)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("BuildIDKey(%q, %q) = %q, %v; want %q", tc.id, tc.kind, got, ok, tc.want)
		}
	}
}

func TestLogKey(t *testing.T) {
	for key, want := range map[string]string{
		"a/b/core-1.zst": "a/b/core-1.log",
		"a/b/core-1.gz":  "a/b/core-1.log",
		"a/b/core-1":     "a/b/core-1.log",
	} {
		if got := LogKey(key); got != want {
			t.Errorf("LogKey(%q) = %q, want %q", key, got, want)
		}
	}
}
