#!/usr/bin/env bash
# Builds golangci-lint from its Go module at a pinned version, into a cache
# outside the repository, and prints the binary's path. A second run with the
# binary present does nothing but print the path. `make lint` runs it.
#
# Why from source: release binaries are downloads these machines cannot
# reach; the Go module proxy can be reached. `go install pkg@version` builds
# with the linter's own go.mod, so its dependencies are the release's.
set -euo pipefail

GOLANGCI_LINT_VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
CACHE_ROOT="${COREDOG_LINT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog/golangci-lint}"
DEST="${CACHE_ROOT}/${GOLANGCI_LINT_VERSION}"
BIN="$DEST/golangci-lint"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST"
echo "golangci-lint: building ${GOLANGCI_LINT_VERSION} (the first build takes a few minutes; later runs reuse the binary)" >&2
GOBIN="$DEST" GOFLAGS="-mod=mod" CGO_ENABLED=0 go install -trimpath \
  "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@${GOLANGCI_LINT_VERSION}"
echo "$BIN"
