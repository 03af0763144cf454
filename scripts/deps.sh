#!/usr/bin/env bash
# Installs what coord needs from Debian's packages, only if it is missing.
#   Always: protoc and the well-known .proto files it includes (etcd-client's build needs both;
#   `protobuf-compiler` without recommends has no google/protobuf/*.proto, `libprotobuf-dev` has).
#   With "test": also etcd and etcdctl (the tests start their own servers), and chromium with
#   its chromedriver (coordctl console's browser test drives a headless Chromium).
# Checks for the files the build uses, not only for the command.
set -euo pipefail
want=("protoc:protobuf-compiler" "/usr/include/google/protobuf/descriptor.proto:libprotobuf-dev")
if [ "${1:-}" = "test" ]; then
  want+=("etcd:etcd-server" "etcdctl:etcd-client" "chromium:chromium" "chromedriver:chromium-driver")
fi
present() {
  case "$1" in
    /*) [ -f "$1" ] ;;
    *) command -v "$1" >/dev/null 2>&1 ;;
  esac
}
missing=()
for pair in "${want[@]}"; do
  present "${pair%%:*}" || missing+=("${pair#*:}")
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
for pair in "${want[@]}"; do
  if ! present "${pair%%:*}"; then
    echo "error: ${pair%%:*} is still missing after installing ${pair#*:}" >&2
    echo "       install it with: apt-get install -y --no-install-recommends ${pair#*:}" >&2
    exit 1
  fi
done
