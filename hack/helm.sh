#!/usr/bin/env bash
# Builds the helm CLI (helm.sh/helm/v4, cmd/helm) from its Go module at a
# pinned version (hack/lib/tool.sh) and prints the binary's path. The
# real-node suite (test/node) installs, upgrades and uninstalls
# charts/coredog with it, as the README tells users to.
set -euo pipefail
. "$(dirname "$0")/lib/tool.sh"

VERSION="${HELM_VERSION:-v4.3.2}"
DIR="$(tool_dir helm "$VERSION")"
tool_ready "$DIR" helm ||
  tool_install "$DIR" "helm: building ${VERSION}, a few minutes the first time" \
    -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=${VERSION}" \
    "helm.sh/helm/v4/cmd/helm@${VERSION}"
echo "$DIR/helm"
