// Package agentlease is the contract between a node agent and the controller
// about the agent's coordination.k8s.io Lease: its name, and the annotations
// through which an agent publishes its endpoint and state and asks for its
// serving certificate, and through which the controller hands the
// certificate back. Agents write the Lease; the controller signs and
// `kubectl coredog status` reads it. It holds names
// and parsing only, no client code.
package agentlease

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strconv"
)

// Annotations on an agent's Lease.
const (
	// AnnotationEndpoint is the agent's dump endpoint, https://host:port.
	AnnotationEndpoint = "coredog.io/endpoint"
	// AnnotationMode is "watch" or "poll": how the agent finds files.
	AnnotationMode = "coredog.io/mode"
	// AnnotationCorePattern is Observe, Manage or Pipe.
	AnnotationCorePattern = "coredog.io/core-pattern"
	// AnnotationLocalBytes is how many bytes of cores the agent keeps on the node.
	AnnotationLocalBytes = "coredog.io/local-bytes"
	// AnnotationServingCSR is the agent's PEM certificate request for its
	// own serving key (pki.NewAgentKey). The agent writes it.
	AnnotationServingCSR = "coredog.io/serving-csr"
	// AnnotationServingCert is the PEM serving certificate the manager
	// issued for that request, naming the Lease's node. Only the manager
	// writes it: the agents' admission policy refuses an agent's write that
	// sets or changes it.
	AnnotationServingCert = "coredog.io/serving-certificate"
)

// maxNameLength is the limit of a Lease name (a DNS subdomain).
const maxNameLength = 253

// Name is the Lease of a policy's agent on a node: "<policy>.<node>", or,
// when that would be too long, the policy and a hash of the node name.
func Name(policy, node string) string {
	n := policy + "." + node
	if len(n) <= maxNameLength {
		return n
	}
	sum := sha256.Sum256([]byte(node))
	return policy + ".node-" + hex.EncodeToString(sum[:])[:32]
}

// Endpoint builds the endpoint URL for a host and port.
func Endpoint(host string, port int) string {
	return (&url.URL{Scheme: "https", Host: net.JoinHostPort(host, strconv.Itoa(port))}).String()
}

// ParseEndpoint checks an endpoint read from a Lease, which any holder of the
// agent's credentials can write: only https with a host and a port is used.
func ParseEndpoint(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("agent endpoint %q: %w", s, err)
	}
	if u.Scheme != "https" || u.Hostname() == "" || u.Port() == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return nil, fmt.Errorf("agent endpoint %q: want https://host:port", s)
	}
	return u, nil
}
