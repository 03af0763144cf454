#!/usr/bin/env bash
# Installs what coord needs from Debian's packages, only if it is missing:
#   protoc (etcd-client's build needs it) always; with "test" also etcd and etcdctl.
set -euo pipefail
want=(protoc:protobuf-compiler)
if [ "${1:-}" = "test" ]; then
  want+=(etcd:etcd-server etcdctl:etcd-client)
fi
missing=()
for pair in "${want[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing ${missing[*]} with apt-get" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged etcd as a service where it can; the tests run their own.
if pgrep -x etcd >/dev/null 2>&1 && command -v systemctl >/dev/null 2>&1; then
  $sudo systemctl stop etcd 2>/dev/null || true
fi
