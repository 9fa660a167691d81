#!/usr/bin/env bash
# Builds krew's own tools from its Go module at a pinned version, into a
# cache outside the repository, and prints their directory:
#   validate-krew-manifest  the manifest checker krew-index runs on every
#                           plugin submission
#   kubectl-krew            krew itself, to install the plugin from a local
#                           archive (`install --manifest=… --archive=…`)
# A second run with both binaries present does nothing but print the
# directory. The krew test (test/krew) runs them on what hack/krew.sh
# writes; `make test` builds them before the tests so that a fresh clone in
# CI has them.
#
# Why from source: release binaries are downloads these machines cannot
# reach; the Go module proxy can be reached. `go install pkg@version` builds
# with krew's own go.mod, so its dependencies are the release's.
set -euo pipefail

KREW_VERSION="${KREW_VERSION:-v0.4.3}"
CACHE_ROOT="${COREDOG_KREW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog/krew}"
DEST="${CACHE_ROOT}/${KREW_VERSION}"

if [[ -x "$DEST/validate-krew-manifest" && -x "$DEST/kubectl-krew" ]]; then
  echo "$DEST"
  exit 0
fi

mkdir -p "$DEST"
echo "krew: building ${KREW_VERSION} (the first build takes under a minute; later runs reuse the binaries)" >&2
GOBIN="$DEST" GOFLAGS="-mod=mod" CGO_ENABLED=0 go install -trimpath \
  "sigs.k8s.io/krew/cmd/validate-krew-manifest@${KREW_VERSION}" \
  "sigs.k8s.io/krew/cmd/krew@${KREW_VERSION}"
# krew runs as a kubectl plugin; its binary is named like one.
mv -f "$DEST/krew" "$DEST/kubectl-krew"
echo "$DEST"
