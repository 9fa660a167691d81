# Sourced by the hack/*.sh scripts that build a tool from its Go module at a
# pinned version into a cache outside the repository (golangci-lint,
# promtool, krew's tools). Why from source: release binaries are downloads
# these machines cannot reach; the Go module proxy can be reached.
# `go install pkg@version` builds with the tool's own go.mod, so its
# dependencies are the release's.
#
#   tool_dir NAME VERSION       the cache directory of NAME at VERSION
#   tool_ready DIR BIN...       true when every BIN is in DIR
#   tool_install DIR NOTE [go install flags] PKG@VERSION...
#                               builds into DIR (static, -trimpath), saying
#                               NOTE (how long the first build takes)

tool_dir() {
  echo "${COREDOG_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coredog}/$1/$2"
}

tool_ready() {
  local dir="$1" b
  shift
  for b in "$@"; do [[ -x "$dir/$b" ]] || return 1; done
}

tool_install() {
  local dir="$1" note="$2"
  shift 2
  mkdir -p "$dir"
  echo "$note, into $dir (later runs reuse it)" >&2
  GOBIN="$dir" GOFLAGS="-mod=mod" CGO_ENABLED=0 go install -trimpath "$@"
}
