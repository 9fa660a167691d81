//go:build tools

// Package tools pins the code generators this repository runs, in a module of
// their own so that their dependencies never mix with the binaries'.
package tools

import (
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
