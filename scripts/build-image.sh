#!/usr/bin/env bash
# Builds routerd's container image, localhost/routerd:dev, from Containerfile:
#   1. the release binaries (cargo build --release --locked -p agent -p cni --bins);
#   2. the base: localhost/routerd-base:local made from this machine's files by
#      scripts/image-base.sh (no registry needed), unless --base IMAGE names another one
#      (e.g. docker.io/library/debian:bookworm-slim where a registry is reachable);
#   3. podman build with the flags this machine needs (../shared/REAL-RUNTIME.md: runc,
#      cgroupfs, ulimits within the hard limits; host network for RUN steps, so that no
#      bridge is created on the host and apt-get can reach Debian's mirrors for a Debian
#      base).
#
#   scripts/build-image.sh [--base IMAGE] [--tag TAG] [--no-cargo] [-- <podman global flags>]
#
# Flags after `--` go to every podman call before its command (e.g. `--root DIR
# --runroot DIR` to keep the image out of the default store).
set -euo pipefail
cd "$(dirname "$0")/.."

base=""
tag=localhost/routerd:dev
cargo=1
podman_flags=()
while (($#)); do
  case "$1" in
    --base) base=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --no-cargo) cargo=0; shift ;;
    --) shift; podman_flags=("$@"); break ;;
    *) echo "build-image: unknown argument $1" >&2; exit 2 ;;
  esac
done

podman=(podman --runtime runc --cgroup-manager cgroupfs "${podman_flags[@]}")

if ((cargo)); then
  cargo build --release --locked -p agent -p cni --bins
fi
# The build context: the four binaries stripped of debug information (about a tenth of
# their size), at the paths Containerfile copies from, and .containerignore.
context=target/image/context
rm -rf "$context"
mkdir -p "$context/target/release"
for b in routerd routectl routerd-cni routerd-ipam; do
  [[ -x target/release/$b ]] || { echo "build-image: target/release/$b is missing" >&2; exit 1; }
  strip --strip-debug -o "$context/target/release/$b" "target/release/$b"
done
cp .containerignore "$context/"

if [[ -z "$base" ]]; then
  base=localhost/routerd-base:local
  scripts/image-base.sh target/image/routerd-base.tar -- "${podman[@]:1}"
fi

"${podman[@]}" build \
  --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
  --network host \
  --build-arg "BASE=$base" \
  -t "$tag" -f Containerfile "$context"
rm -rf "$context"
echo "build-image: $tag (base $base)"
