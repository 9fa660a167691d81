#!/usr/bin/env bash
# Installs the Debian packages the real-node suite (test/node) runs a node
# with, when any is missing: containerd and runc (the container runtime),
# containernetworking-plugins (the CNI bridge, host-local and loopback
# plugins in /usr/lib/cni) and iptables (the kubernetes Service's DNAT in
# the node's network namespace), and busybox-static (the shell of the
# suite's debug image). About 30 s and 160 MB on Debian 12. A
# second run with everything present does nothing.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in containerd runc containernetworking-plugins iptables busybox-static; do
  have "$p" || need+=("$p")
done
if [[ ${#need[@]} -eq 0 ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "node-packages: missing ${need[*]}, and this is not a Debian-like system: install them with its package manager" >&2
  exit 1
fi
sudo=()
if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
echo "node-packages: installing ${need[*]} (about 30 s)" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
