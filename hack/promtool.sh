#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) from
# its Go module at a pinned version, into a cache outside the repository, and
# prints the binary's path. A second run with the binary present does nothing
# but print the path. The chart's alert tests (test/alerts) run it; `make
# test` builds it before the tests so that a fresh clone in CI has it.
#
# Why from source: release binaries are downloads these machines cannot
# reach; the Go module proxy can be reached. `go install pkg@version` builds
# with Prometheus's own go.mod, so its dependencies are the release's.
# remove_all_sd leaves out the service-discovery plugins (AWS, Azure, GCE,
# Kubernetes and the rest), which checking and unit-testing rules never
# use; it makes the first build much shorter.
set -euo pipefail

PROMTOOL_VERSION="${PROMTOOL_VERSION:-v0.316.0}"
CACHE_ROOT="${COREDOG_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog/promtool}"
DEST="${CACHE_ROOT}/${PROMTOOL_VERSION}-remove_all_sd"
BIN="$DEST/promtool"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST"
echo "promtool: building ${PROMTOOL_VERSION} (the first build takes a few minutes; later runs reuse the binary)" >&2
GOBIN="$DEST" GOFLAGS="-mod=mod" CGO_ENABLED=0 go install -trimpath -tags remove_all_sd \
  "github.com/prometheus/prometheus/cmd/promtool@${PROMTOOL_VERSION}"
echo "$BIN"
