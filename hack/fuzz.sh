#!/usr/bin/env bash
# Runs every fuzz target (as package:Target arguments) for FUZZ_TIME each.
#
# Targets run one after another, each with FUZZ_PARALLEL workers (default: the
# CPU count, which is also go test's default; set it lower on a shared
# machine). Running targets side by side instead would only split the same
# cores between them and pay each target's start-up (instrumented build,
# baseline coverage of its corpus) at the same time.
#
# A target fails only when go test fails AND writes a failing input under
# testdata/fuzz/<Target>/: Go 1.26's fuzz coordinator can end a duration-bound
# run with a bare "context deadline exceeded" and no input (golang/go#75804,
# fixed in Go 1.27). Such a run is reported and retried once; a second one is
# reported and not counted as a failure, since nothing failing was found.
set -uo pipefail
fuzz_time="${FUZZ_TIME:-30s}"
parallel="${FUZZ_PARALLEL:-$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)}"
go="${GO:-go}"
failed=0
count() { find "$1" -type f 2>/dev/null | wc -l; }
for t in "$@"; do
  pkg="${t%%:*}"; name="${t##*:}"
  corpus="$pkg/testdata/fuzz/$name"
  for try in 1 2; do
    echo "fuzz $pkg $name ($fuzz_time, $parallel workers)"
    before=$(count "$corpus")
    if "$go" test "./$pkg" -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzz_time" -parallel "$parallel"; then
      break
    fi
    if [[ "$(count "$corpus")" -gt "$before" ]]; then
      echo "fuzz $pkg $name: FAILED; the failing input is in $corpus" >&2
      failed=1
      break
    fi
    echo "fuzz $pkg $name: go test failed without writing a failing input (Go's fuzz coordinator deadline race, golang/go#75804)" >&2
  done
done
exit "$failed"
