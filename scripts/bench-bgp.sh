#!/usr/bin/env bash
# The comparative BGP benchmark: builds our speaker and the benchmark in release mode, then
# runs tester -> daemon -> monitor for each daemon in a private network namespace and prints
# time, prefixes/s and peak RSS against BIRD. Needs root. Arguments go to the benchmark, e.g.
#   scripts/bench-bgp.sh --prefixes 1000000 --paths 10000 --daemons ours,bird,frr,gobgp
# (see bgp/examples/bgp-bench.rs for the method).
set -euo pipefail
cd "$(dirname "$0")/.."
# Our speaker is one of the daemons; without it the benchmark reports "ours" as not built.
examples=(--example bgp-bench)
if [[ -f bgp/examples/speaker.rs ]]; then examples+=(--example speaker); fi
cargo build --release -p bgp "${examples[@]}"
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/bgp-bench" "$@"
