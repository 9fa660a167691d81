package app

import (
	"testing"

	"k8s.io/utils/ptr"

	coredogv1 "github.com/coredog/coredog/api/v1alpha1"
)

func TestDumpModeOf(t *testing.T) {
	for _, tc := range []struct {
		name  string
		facts fileFacts
		uid   *int64
		want  coredogv1.DumpMode
	}{
		{"%d 2 from the receiver or the name", fileFacts{dumpMode: 2, pipe: true}, ptr.To[int64](1000), coredogv1.DumpModePrivileged},
		{"%d 1", fileFacts{dumpMode: 1, pipe: true}, ptr.To[int64](1000), coredogv1.DumpModeUser},
		{"%d wins over the owner", fileFacts{dumpMode: 1, owner: 0}, ptr.To[int64](1000), coredogv1.DumpModeUser},
		{"a root-owned core of uid 1000: suid_dumpable=2", fileFacts{owner: 0}, ptr.To[int64](1000), coredogv1.DumpModePrivileged},
		{"a core owned by its process's uid", fileFacts{owner: 1000}, ptr.To[int64](1000), coredogv1.DumpModeUser},
		{"root's own core", fileFacts{owner: 0}, ptr.To[int64](0), coredogv1.DumpModeUser},
		{"an owner that is neither (a user namespace)", fileFacts{owner: 100000}, ptr.To[int64](0), ""},
		{"uid unknown", fileFacts{owner: 0}, nil, ""},
		{"Pipe without %d: the receiver owns every file", fileFacts{owner: 0, pipe: true}, ptr.To[int64](1000), ""},
		{"Pipe, the owner matching means nothing either", fileFacts{owner: 0, pipe: true}, ptr.To[int64](0), ""},
	} {
		if got := dumpModeOf(tc.facts, tc.uid); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
}
