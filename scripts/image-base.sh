#!/usr/bin/env bash
# A minimal base image for Containerfile made only from this machine's files, for machines
# that reach no image registry: busybox-static (/bin/busybox and its applet links, `sh`
# among them), iproute2's `ip`, every shared library that `ip` and routerd's four binaries
# link (as ldd lists them) with the dynamic loader, and a minimal /etc/passwd and /etc/group.
# The layout is Debian's merged /usr (/bin, /sbin, /lib, /lib64 link into /usr), so the
# loader finds the libraries at the paths it was built with.
#
#   scripts/image-base.sh <out.tar> [--bins DIR] [--no-import] [-- <podman global flags>]
#
# writes <out.tar> and imports it as localhost/routerd-base:local (podman import), unless
# --no-import. DIR holds the binaries whose libraries are taken (default target/release;
# missing ones are skipped: the image build copies them and fails if they are absent).
# Flags after `--` go to podman before `import` (e.g. --root/--runroot of a test).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=localhost/routerd-base:local
out=""
bins=target/release
import=1
podman_flags=()
while (($#)); do
  case "$1" in
    --bins) bins=$2; shift 2 ;;
    --no-import) import=0; shift ;;
    --) shift; podman_flags=("$@"); break ;;
    -*) echo "image-base: unknown flag $1" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
[[ -n "$out" ]] || { echo "usage: scripts/image-base.sh <out.tar> [--bins DIR] [--no-import] [-- podman flags]" >&2; exit 2; }

busybox=$(command -v busybox || true)
[[ -n "$busybox" ]] || { echo "image-base: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" >/dev/null 2>&1; then
  echo "image-base: $busybox is dynamically linked; install busybox-static" >&2; exit 1
fi
ip_bin=$(command -v ip || true)
[[ -n "$ip_bin" ]] || { echo "image-base: ip is missing (apt-get install iproute2)" >&2; exit 1; }

rootfs=$(mktemp -d)
chmod 0755 "$rootfs"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/usr/{bin,sbin,lib,lib64} "$rootfs"/{etc,tmp,root,proc,sys,dev,run,var/tmp}
chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$rootfs/$d"; done

# busybox and its applets (sh, ls, cat, ps, ...), except `ip`: iproute2's is the real one.
install -m 0755 "$busybox" "$rootfs/usr/bin/busybox"
for applet in $("$busybox" --list); do
  [[ "$applet" == busybox || "$applet" == ip ]] && continue
  [[ -e "$rootfs/usr/bin/$applet" ]] || ln -s busybox "$rootfs/usr/bin/$applet"
done
install -m 0755 "$(readlink -f "$ip_bin")" "$rootfs/usr/bin/ip"
ln -s ../bin/ip "$rootfs/usr/sbin/ip"

# Every library (and the loader) that ip and the binaries link, at the path ldd names.
objects=("$ip_bin")
for b in routerd routectl routerd-cni routerd-ipam; do
  [[ -x "$bins/$b" ]] && objects+=("$bins/$b")
done
libs=$(for o in "${objects[@]}"; do ldd "$o"; done |
  awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]+ \(/ {print $1}' | sort -u)
for lib in $libs; do
  dest="$rootfs$lib"
  mkdir -p "$(dirname "$dest")"
  [[ -e "$dest" ]] || cp -L "$lib" "$dest"
done

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"

mkdir -p "$(dirname "$out")"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$out" .
echo "image-base: $out ($(du -h "$out" | cut -f1); $(wc -w <<<"$libs") libraries)"
if ((import)); then
  podman "${podman_flags[@]}" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    "$out" "$IMAGE" >/dev/null
  echo "image-base: imported as $IMAGE"
fi
