#!/usr/bin/env bash
# Builds promtool (Prometheus's rule checker and rule unit-test runner) from
# its Go module at a pinned version (hack/lib/tool.sh) and prints the
# binary's path. The chart's alert tests (test/alerts) run it; `make test`
# builds it before the tests so that a fresh clone in CI has it.
# remove_all_sd leaves out the service-discovery plugins (AWS, Azure, GCE,
# Kubernetes and the rest), which checking and unit-testing rules never
# use; it makes the first build much shorter.
set -euo pipefail
. "$(dirname "$0")/lib/tool.sh"

VERSION="${PROMTOOL_VERSION:-v0.316.0}"
DIR="$(tool_dir promtool "$VERSION-remove_all_sd")"
tool_ready "$DIR" promtool ||
  tool_install "$DIR" "promtool: building ${VERSION}, a few minutes the first time" -tags remove_all_sd \
    "github.com/prometheus/prometheus/cmd/promtool@${VERSION}"
echo "$DIR/promtool"
