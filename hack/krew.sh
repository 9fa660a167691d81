#!/usr/bin/env bash
# Builds kubectl-coredog's krew release: one tar.gz per os/arch (the binary
# and the licence file) and the krew plugin manifest dist/coredog.yaml, made
# from hack/krew/coredog.yaml.tmpl with each archive's sha256. `make krew`
# runs it for every platform; test/krew runs it for one.
#
#   VERSION=v0.2.0 hack/krew.sh                       # all platforms into dist/
#   hack/krew.sh -platforms linux/amd64 -out /tmp/k   # one platform elsewhere
#
# The manifest's URIs point at the GitHub release tagged $VERSION; upload the
# archives there under the same names before submitting the manifest to
# krew-index.
set -euo pipefail

cd "$(dirname "$0")/.."
exec go run ./hack/krew -repo . -version "${VERSION:-v0.1.0}" "$@"
