#!/usr/bin/env bash
# Fuzz the BGP message decoder (bgp/fuzz, target decode_message) for N seconds.
#
#   scripts/fuzz.sh [seconds]      (default 60)
#
# Installs cargo-fuzz if missing, replays the checked-in seed corpus
# (bgp/fuzz/corpus/decode_message) so that a regression there fails fast, then fuzzes with
# libFuzzer for the given time. New inputs go to a scratch corpus (bgp/fuzz/corpus-work,
# gitignored), crashes to bgp/fuzz/artifacts/decode_message/. Exits non-zero on a crash.
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, -Zsanitizer-coverage...); with a
# stable toolchain RUSTC_BOOTSTRAP=1 unlocks them.
set -euo pipefail

secs="${1:-60}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/bgp"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# No unsafe code in the codec, so AddressSanitizer buys nothing; libFuzzer's coverage and
# panic detection are what we need, and the build is much faster without it.
fuzz=(cargo fuzz run --sanitizer none decode_message)

echo "== replaying seed corpus"
"${fuzz[@]}" fuzz/corpus/decode_message -- -runs=0

echo "== fuzzing for ${secs}s"
mkdir -p fuzz/corpus-work
"${fuzz[@]}" fuzz/corpus-work fuzz/corpus/decode_message -- \
    -max_total_time="$secs" -max_len=4200 -print_final_stats=1
