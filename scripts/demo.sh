#!/usr/bin/env bash
# Runs the quickstart on the embedded backend: no etcd needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh
exec cargo run --quiet -p coord-examples --bin quickstart
