#!/usr/bin/env bash
# Regenerates deepcopy code, CRDs and RBAC and fails when that changed any
# file: generated files are never edited by hand and must be committed fresh.
set -euo pipefail
cd "$(dirname "$0")/.."
snapshot() {
  { find api config/crd/bases charts/coredog/crds config/rbac -type f \( -name 'zz_generated.*' -o -path 'config/crd/bases/*' -o -path 'charts/coredog/crds/*' -o -name 'role.yaml' \) 2>/dev/null | sort | xargs -r sha256sum; } || true
}
before="$(snapshot)"
make --no-print-directory manifests generate >/dev/null
after="$(snapshot)"
if [[ "$before" != "$after" ]]; then
  echo "Generated files were stale; 'make manifests generate' rewrote them:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  echo "Commit the regenerated files." >&2
  exit 1
fi
echo "Generated files are fresh"
