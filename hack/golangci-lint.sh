#!/usr/bin/env bash
# Builds golangci-lint from its Go module at a pinned version (hack/lib/tool.sh)
# and prints the binary's path. `make lint` runs it.
set -euo pipefail
. "$(dirname "$0")/lib/tool.sh"

VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
DIR="$(tool_dir golangci-lint "$VERSION")"
tool_ready "$DIR" golangci-lint ||
  tool_install "$DIR" "golangci-lint: building ${VERSION}, a few minutes the first time" \
    "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${VERSION}"
echo "$DIR/golangci-lint"
