#!/usr/bin/env bash
# The test command: formatting, lints, every test in the workspace (unit, property,
# kernel and interop tests in network namespaces; these need root, as CI is), then a
# bounded fuzz run of the BGP decoder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo fmt --all -- --check
scripts/validate-manifests.sh
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --release -- --test-threads=2
# The BGP decoder's fuzz target: replay the seed corpus, then fuzz for a bounded time.
scripts/fuzz.sh 60
