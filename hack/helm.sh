#!/usr/bin/env bash
# Builds the helm CLI (helm.sh/helm/v4, cmd/helm) from its Go module at a
# pinned version, into a cache outside the repository, and prints the
# binary's path. A second run with the binary present does nothing but print
# the path. The real-node suite (test/node) installs, upgrades and
# uninstalls charts/coredog with it, as the README tells users to.
#
# Why from source: release binaries are downloads these machines cannot
# reach; the Go module proxy can be reached. `go install pkg@version` builds
# with helm's own go.mod, so its dependencies are the release's.
set -euo pipefail

HELM_VERSION="${HELM_VERSION:-v4.3.2}"
CACHE_ROOT="${COREDOG_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog/helm}"
DEST="${CACHE_ROOT}/${HELM_VERSION}"
BIN="$DEST/helm"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DEST"
echo "helm: building ${HELM_VERSION} (the first build takes a few minutes; later runs reuse the binary)" >&2
GOBIN="$DEST" GOFLAGS="-mod=mod" CGO_ENABLED=0 go install -trimpath \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${HELM_VERSION}" \
  "helm.sh/helm/v4/cmd/helm@${HELM_VERSION}"
echo "$BIN"
