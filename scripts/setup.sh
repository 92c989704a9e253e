#!/usr/bin/env bash
# Installs every prerequisite of the build, the tests and the lab on a fresh Debian machine:
# the real BGP peers we test against (BIRD 2, FRR, GoBGP, ExaBGP), iproute2 and capture tools,
# a real container runtime that calls our CNI plugins (podman with runc), nftables (natOutgoing),
# and the Rust components the checks use. Idempotent: a second run changes nothing.
set -euo pipefail

pkgs=(bird2 frr gobgpd exabgp iproute2 iputils-ping tcpdump ethtool procps psmisc
      podman runc containernetworking-plugins busybox-static nftables
      etcd-server etcd-client protobuf-compiler libprotobuf-dev openssl python3 python3-venv binutils)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages enable their services; the tests start their own instances in network
# namespaces, so the system-wide ones must not hold port 179 or the BIRD control socket.
for svc in bird frr gobgpd exabgp etcd; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
pkill -x bird >/dev/null 2>&1 || true

rustup component add rustfmt clippy >/dev/null 2>&1 || true

# kubernetes-validate (PyPI) for scripts/validate-manifests.sh: the Kubernetes OpenAPI schemas
# the manifests are checked against offline, pinned, in a venv under target/ (Debian's python3
# refuses pip installs into the system).
venv="$(dirname "$0")/../target/validate-venv"
kv_version=1.37.0
if [[ "$("$venv/bin/kubernetes-validate" --version 2>/dev/null)" != *"$kv_version"* ]]; then
  echo "setup: installing kubernetes-validate $kv_version into target/validate-venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
echo "setup: prerequisites present (bird $(bird --version 2>&1 | awk '{print $3}'), gobgpd $(gobgpd --version | awk '{print $3}'), frr $(/usr/lib/frr/bgpd --version 2>/dev/null | head -1 | awk '{print $3}'))"
