package storage

import "testing"

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
