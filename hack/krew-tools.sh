#!/usr/bin/env bash
# Builds krew's own tools from its Go module at a pinned version
# (hack/lib/tool.sh) and prints their directory:
#   validate-krew-manifest  the manifest checker krew-index runs on every
#                           plugin submission
#   kubectl-krew            krew itself, to install the plugin from a local
#                           archive (`install --manifest=… --archive=…`)
# The krew test (test/krew) runs them on what hack/krew.sh writes; `make
# test` builds them before the tests so that a fresh clone in CI has them.
set -euo pipefail
. "$(dirname "$0")/lib/tool.sh"

VERSION="${KREW_VERSION:-v0.4.3}"
DIR="$(tool_dir krew "$VERSION")"
if ! tool_ready "$DIR" validate-krew-manifest kubectl-krew; then
  tool_install "$DIR" "krew: building ${VERSION}, under a minute the first time" \
    "sigs.k8s.io/krew/cmd/validate-krew-manifest@${VERSION}" \
    "sigs.k8s.io/krew/cmd/krew@${VERSION}"
  # krew runs as a kubectl plugin; its binary is named like one.
  mv -f "$DIR/krew" "$DIR/kubectl-krew"
fi
echo "$DIR"
