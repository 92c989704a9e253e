#!/usr/bin/env bash
# The main job: installs the prerequisites, builds, and runs the lab (a cluster of our
# speakers plus a BIRD top-of-rack router in network namespaces). Extra arguments go to the
# lab, e.g. `scripts/lab.sh --nodes 5 --keep`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p bgp --example speaker --example lab
exec target/release/examples/lab "$@"
