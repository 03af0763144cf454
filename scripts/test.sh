#!/usr/bin/env bash
# Runs the whole test suite: unit, conformance (embedded + real etcd), fault tests on a real
# 3-member cluster, trybuild cases and doc tests. The tests start their own etcd servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
exec cargo test --workspace --all-features "$@"
