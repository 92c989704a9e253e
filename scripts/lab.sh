#!/usr/bin/env bash
# The main job: installs the prerequisites, builds, and runs the lab: a cluster of routerd
# nodes operated with routectl, with pods, plus a BIRD top-of-rack router, all in network
# namespaces (see agent/examples/lab/). Extra arguments go to the lab, e.g.
# `scripts/lab.sh --topology tor --encap none --ipv6 --keep`, or `--datastore etcd` for a three-member
# etcd cluster as the datastore.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p agent --bins --example lab
cargo build --release --locked -p cni --bins
exec target/release/examples/lab "$@"
