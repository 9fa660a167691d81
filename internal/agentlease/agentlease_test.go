package agentlease

import (
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	if got := Name("default", "node-1"); got != "default.node-1" {
		t.Fatalf("Name = %q", got)
	}
	long := strings.Repeat("n", 250)
	got := Name("default", long)
	if len(got) > maxNameLength || !strings.HasPrefix(got, "default.node-") {
		t.Fatalf("Name of a long node = %q (%d bytes)", got, len(got))
	}
	if Name("default", long) != got || Name("default", long+"x") == got {
		t.Fatal("Name of a long node is not a stable, distinct hash")
	}
}

func TestEndpoint(t *testing.T) {
	cases := []struct {
		in string
		ok bool
	}{
		{Endpoint("10.0.0.7", 9443), true},
		{Endpoint("::1", 9443), true},
		{"http://10.0.0.7:9443", false},
		{"https://10.0.0.7", false},
		{"https://user:pw@10.0.0.7:1", false},
		{"https://10.0.0.7:1/v1/dumps", false},
		{"https://10.0.0.7:1?x=y", false},
		{"::", false},
	}
	for _, tc := range cases {
		_, err := ParseEndpoint(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseEndpoint(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	if Endpoint("::1", 1) != "https://[::1]:1" {
		t.Fatalf("Endpoint with IPv6 = %q", Endpoint("::1", 1))
	}
}
