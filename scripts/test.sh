#!/usr/bin/env bash
# Runs the whole test suite: unit, conformance (embedded + real etcd), fault tests on a real
# 3-member cluster, trybuild cases, doc tests (the README's Rust blocks are doc tests of
# coord-examples) and every example (after every crate's docs build without a warning: a
# broken intra-doc link fails here). The tests start their own etcd servers.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh test
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
exec cargo test --workspace --all-features "$@"
