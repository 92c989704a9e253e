#!/usr/bin/env bash
# The full-table benchmark: builds routerd, routectl and the benchmark in release mode, then
# measures how fast routerd gets N routes from a BIRD top-of-rack into the kernel FIB, beside
# BIRD doing the same job as the node (calico-node's configuration) and beside `ip -batch`
# writing them directly. Needs root; only namespaces it creates are touched. Arguments go to
# the benchmark, e.g.
#   scripts/bench-routerd.sh --routes 1000000
#   scripts/bench-routerd.sh --routes 100000 --routerd /tmp/routerd-baseline --only routerd
# (see agent/examples/routerd-bench.rs for the method).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p agent --bin routerd --bin routectl --example routerd-bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/routerd-bench" "$@"
