#!/usr/bin/env bash
# The sluice network-namespace lab (all addresses private and inside the lab):
#
#   sl-lab-client1 192.168.50.11 ─┐
#   sl-lab-client2 192.168.50.12 ─┼─ br0 in sl-lab-wan ── sl-outside ┐
#                                 ┘                                   │ sl-lab-app: `sluice run`
#   sl-lab-vpc (the VPC router):   172.31.1.1 ── sl-inside-a ─────────┤   (DPDK net_af_packet on
#     host 172.31.1.10 (HTTP :80)  172.31.2.1 ── sl-inside-b ─────────┘    the three sl-* veths)
#     host 172.31.2.10
#     behind the router: 172.16.0.10 (peered VPC), 192.168.100.10 (on-premises),
#                        198.18.0.10 (the "internet")
#
# Usage: scripts/lab.sh up | down | status. Needs root, iproute2, ethtool, python3.
set -euo pipefail
P=sl-lab
NS=("$P-wan" "$P-app" "$P-client1" "$P-client2" "$P-vpc")
WWW=/tmp/sl-lab-www   # the VPC host's web root (up makes it, down removes it)

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# A veth pair with checksum offload off on both ends (a packet socket reads what the peer
# kernel sends; with offload the UDP checksums would be left unfinished).
veth() { # ns_a if_a ns_b if_b
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  nsx "$1" ip link set "$2" up; nsx "$3" ip link set "$4" up
  nsx "$1" ethtool -K "$2" tx off rx off >/dev/null
  nsx "$3" ethtool -K "$4" tx off rx off >/dev/null
}

down() {
  local ns
  for ns in "${NS[@]}"; do
    if [ -e "/run/netns/$ns" ]; then
      for pid in $(ip netns pids "$ns"); do
        kill -9 "$pid" 2>/dev/null || [ ! -e "/proc/$pid" ] || echo "warning: could not kill $pid in $ns" >&2
      done
      ip netns del "$ns"
    fi
  done
  rm -rf "$WWW"
}

up() {
  down
  local ns
  for ns in "${NS[@]}"; do ip netns add "$ns"; nsx "$ns" ip link set lo up; done
  nsx "$P-wan" ip link add br0 type bridge
  nsx "$P-wan" ip link set br0 up
  veth "$P-app" sl-outside "$P-wan" w-app
  nsx "$P-wan" ip link set w-app master br0
  local i
  for i in 1 2; do
    veth "$P-wan" "w-c$i" "$P-client$i" eth0
    nsx "$P-wan" ip link set "w-c$i" master br0
    nsx "$P-client$i" ip addr add "192.168.50.1$i/24" dev eth0
  done
  veth "$P-app" sl-inside-a "$P-vpc" vpc-a
  veth "$P-app" sl-inside-b "$P-vpc" vpc-b
  nsx "$P-vpc" ip addr add 172.31.1.1/24 dev vpc-a
  nsx "$P-vpc" ip addr add 172.31.1.10/24 dev vpc-a
  nsx "$P-vpc" ip addr add 172.31.2.1/24 dev vpc-b
  nsx "$P-vpc" ip addr add 172.31.2.10/24 dev vpc-b
  local a
  for a in 172.16.0.10/32 192.168.100.10/32 198.18.0.10/32; do
    nsx "$P-vpc" ip addr add "$a" dev lo
  done
  mkdir -p "$WWW"
  echo "hello from the VPC host 172.31.1.10" > "$WWW/index.html"
  ( cd "$WWW" && exec ip netns exec "$P-vpc" python3 -m http.server 80 --bind 172.31.1.10 ) \
    >/dev/null 2>&1 &
  echo "lab up: ${NS[*]}"
}

status() {
  local ns
  for ns in "${NS[@]}"; do
    echo "== $ns"
    nsx "$ns" ip -brief addr 2>/dev/null || echo "(absent)"
  done
}

case "${1:-}" in
  up) up ;;
  down) down; echo "lab down" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
