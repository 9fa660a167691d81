#!/usr/bin/env bash
# Builds the envtest control-plane binaries (kube-apiserver, etcd, kubectl) from
# their Go modules at pinned versions, into a cache outside the repository, and
# prints the directory that holds them. A second run with the binaries present
# does nothing but print the directory.
#
# Why from source: setup-envtest downloads prebuilt binaries from a bucket that
# these machines cannot reach; the Go module proxy can be reached.
#
# With --node it also builds what a real node needs beside them (kubelet,
# kube-controller-manager, kube-scheduler) into the same directory, in one
# go build so the three share their compile work (about 10 minutes after the
# kube-apiserver build has filled Go's build cache).
set -euo pipefail

NODE=0
if [[ "${1:-}" == "--node" ]]; then NODE=1; fi
NODE_CMDS=(kubelet kube-controller-manager kube-scheduler)

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"    # k8s.io/kubernetes; staging modules are v0.${minor}.${patch}
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"    # go.etcd.io/etcd/server/v3
CACHE_ROOT="${COREDOG_ENVTEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog/envtest}"
DEST="${CACHE_ROOT}/${KUBE_VERSION}-etcd${ETCD_VERSION}"

log() { echo "envtest: $*" >&2; }

have_all() {
  local c
  for c in kube-apiserver etcd kubectl; do [[ -x "$DEST/$c" ]] || return 1; done
  if [[ $NODE == 1 ]]; then
    for c in "${NODE_CMDS[@]}"; do [[ -x "$DEST/$c" ]] || return 1; done
  fi
}
if have_all; then
  echo "$DEST"
  exit 0
fi

staging_version="v0.${KUBE_VERSION#v1.}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$DEST"
export GOFLAGS="-mod=mod"
export CGO_ENABLED=0

# The kubernetes module requires its staging modules at v0.0.0 and replaces
# them with local directories; those replaces do not apply to a module that
# depends on it, so this throwaway module pins each one to the release.
log "resolving k8s.io/kubernetes@${KUBE_VERSION} (staging modules at ${staging_version})"
gomod="$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')"
mkdir -p "$work/kube"
{
  echo "module coredog.io/envtest-build"
  echo
  echo "go 1.26"
  echo
  echo "require k8s.io/kubernetes ${KUBE_VERSION}"
  echo
  sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#replace \1 => \1 '"${staging_version}"'#p' "$gomod"
} >"$work/kube/go.mod"
ldflags="-s -w \
  -X k8s.io/component-base/version.gitVersion=${KUBE_VERSION} \
  -X k8s.io/component-base/version.gitMajor=1 \
  -X k8s.io/component-base/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2) \
  -X k8s.io/client-go/pkg/version.gitVersion=${KUBE_VERSION} \
  -X k8s.io/client-go/pkg/version.gitMajor=1 \
  -X k8s.io/client-go/pkg/version.gitMinor=$(echo "$KUBE_VERSION" | cut -d. -f2)"
for cmd in kube-apiserver kubectl; do
  if [[ ! -x "$DEST/$cmd" ]]; then
    log "building $cmd ${KUBE_VERSION} (the first build takes 15-20 minutes; later ones reuse Go's build cache)"
    (cd "$work/kube" && go build -trimpath -ldflags="$ldflags" -o "$DEST/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd")
    mv "$DEST/$cmd.tmp" "$DEST/$cmd"
  fi
done

if [[ $NODE == 1 ]]; then
  missing=()
  for cmd in "${NODE_CMDS[@]}"; do
    [[ -x "$DEST/$cmd" ]] || missing+=("k8s.io/kubernetes/cmd/$cmd")
  done
  if ((${#missing[@]})); then
    log "building ${NODE_CMDS[*]} ${KUBE_VERSION} (about 10 minutes the first time)"
    mkdir -p "$work/node-out"
    (cd "$work/kube" && go build -trimpath -ldflags="$ldflags" -o "$work/node-out/" "${missing[@]}")
    for cmd in "${NODE_CMDS[@]}"; do
      if [[ -x "$work/node-out/$cmd" ]]; then mv "$work/node-out/$cmd" "$DEST/$cmd"; fi
    done
  fi
fi

if [[ ! -x "$DEST/etcd" ]]; then
  log "building etcd ${ETCD_VERSION}"
  mkdir -p "$work/etcd"
  printf 'module coredog.io/etcd-build\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" >"$work/etcd/go.mod"
  (cd "$work/etcd" && go build -trimpath -ldflags="-s -w" -o "$DEST/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$DEST/etcd.tmp" "$DEST/etcd"
fi

log "binaries ready in $DEST"
echo "$DEST"
