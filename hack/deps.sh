#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs what blixt's build and tests need on a fresh Debian machine (run as root):
# Debian packages only when one is missing, and node_modules only when package-lock.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."

# build: clang llvm libbpf-dev make gcc; dataplane and lab: bpftool iproute2 socat (gratuitous ARP)
# iperf3 wrk sockperf haproxy nginx libnginx-mod-stream nftables (bench); controller tests: etcd-server openssl; images and conformance: umoci jq debootstrap;
# failover on kind: iputils-arping (who answers ARP for an address)
debs=(clang llvm libbpf-dev bpftool iproute2 make gcc libc6-dev socat iperf3 wrk sockperf haproxy nginx libnginx-mod-stream nftables python3 shellcheck
  etcd-server openssl umoci jq debootstrap iputils-arping)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # haproxy and nginx are tools here (the bench and lab start their own instances in network
  # namespaces): keep their packages from starting system services on a host that runs an
  # init system. A policy-rc.d that refuses every start does that; one already there is kept.
  policy=/usr/sbin/policy-rc.d ours=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && ours=1
  fi
  status=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || status=$?
  if [ -n "$ours" ]; then rm -f "$policy"; fi
  [ "$status" = 0 ] || { echo "deps: apt-get install failed ($status)" >&2; exit "$status"; }
fi

stamp=node_modules/.blixt-lock-stamp
if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
  echo "deps: npm ci"
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json "$stamp"
fi

if ! mountpoint -q /sys/fs/bpf; then
  echo "deps: mounting bpffs on /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
