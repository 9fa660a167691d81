#!/usr/bin/env bash
# Builds the versitygw S3 server (github.com/versity/versitygw, cmd/versitygw)
# from its Go module at a pinned version, into a cache outside the repository,
# and prints the binary's path. A second run with the binary present does
# nothing but print the path. `make demo S3=1` uses it as a real S3 endpoint
# on loopback (`versitygw --port 127.0.0.1:PORT posix DIR`, with the root
# credentials in ROOT_ACCESS_KEY_ID / ROOT_SECRET_ACCESS_KEY).
#
# Why from source: prebuilt release binaries are downloads these machines
# cannot reach; the Go module proxy can be reached.
set -euo pipefail

VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE_ROOT="${COREDOG_VERSITYGW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog/versitygw}"
DEST="${CACHE_ROOT}/${VERSITYGW_VERSION}"
BIN="$DEST/versitygw"

log() { echo "versitygw: $*" >&2; }

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0

# A throwaway module that requires versitygw, so that its go.mod (and go.sum
# from the proxy's checksums) decides every dependency's version.
log "resolving github.com/versity/versitygw@${VERSITYGW_VERSION}"
printf 'module coredog.io/versitygw-build\n\ngo 1.26\n\nrequire github.com/versity/versitygw %s\n' "$VERSITYGW_VERSION" >"$work/go.mod"
log "building versitygw ${VERSITYGW_VERSION} (the first build takes about a minute; later runs reuse the binary)"
(cd "$work" && go build -trimpath -ldflags="-s -w -X main.Version=${VERSITYGW_VERSION}" -o "$BIN.tmp" github.com/versity/versitygw/cmd/versitygw)
mv "$BIN.tmp" "$BIN"
log "binary ready: $BIN"
echo "$BIN"
