#!/usr/bin/env bash
# The lab's full matrix (nightly-sized; the test command runs a subset, agent/tests/lab_shapes.rs):
# every topology x encapsulation (none, ipip, vxlan; each Always and CrossSubnet), IPv4 and dual
# stack, each run checking sessions, exact kernel routes, pod-to-pod reachability and, on two
# racks, encapsulation on the underlay by capture. Shapes the lab refuses (with its reason) are
# listed as such. Prints one line per run and exits non-zero if any run failed; each failed
# run's output is kept in target/lab-matrix/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p agent --bins --example lab
cargo build --release --locked -p cni --bins
out=target/lab-matrix
mkdir -p "$out"
passed=0 failed=0 refused=0
for topology in mesh reflectors tor per-node; do
  for encap in none ipip vxlan ipip-cs vxlan-cs; do
    for family in v4 dual; do
      args=(--topology "$topology" --encap "${encap%-cs}")
      [[ $encap == *-cs ]] && args+=(--crosssubnet)
      [[ $family == dual ]] && args+=(--ipv6)
      # Without an encapsulation, nodes of different racks need a ToR that learns pod routes.
      [[ $encap == none && ( $topology == mesh || $topology == reflectors ) ]] && args+=(--racks 1)
      name="$topology-$encap-$family"
      start=$SECONDS
      if target/release/examples/lab "${args[@]}" >"$out/$name.log" 2>&1; then
        echo "PASS    $name ($((SECONDS - start)) s)"
        passed=$((passed + 1))
        rm -f "$out/$name.log"
      elif grep -q "^Error: --" "$out/$name.log"; then
        echo "REFUSED $name: $(grep -m1 '^Error:' "$out/$name.log" | cut -c8-)"
        refused=$((refused + 1))
        rm -f "$out/$name.log"
      else
        echo "FAIL    $name (see $out/$name.log)"
        failed=$((failed + 1))
      fi
    done
  done
done
echo "lab-matrix: $passed passed, $failed failed, $refused refused"
((failed == 0))
