#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian 12 machine as root: installs what is missing,
# builds sluice, makes a PKI with easy-rsa, builds the configuration with the AWS-style verbs,
# brings up the namespace lab (scripts/lab.sh), runs `sluice run` with the DPDK data plane on
# af_packet ports, connects the real OpenVPN 2.6 client with the exported .ovpn, pings and
# fetches a web page through the tunnel, lists the connection, and tears everything down.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

sluice_install_packages
sluice_cargo_env
[ "$(id -u)" -eq 0 ] || { echo "error: the demo needs root (namespaces, DPDK)" >&2; exit 1; }

echo "==> building sluice"
cargo build --release --locked -p sluice-control --bin sluice
sluice=$PWD/target/release/sluice
lab=$PWD/scripts/lab.sh

work=$(mktemp -d /tmp/sluice-demo.XXXXXX)
daemon_pid=""; client_pid=""
cleanup() {
  [ -n "$client_pid" ] && kill "$client_pid" 2>/dev/null || true
  if [ -n "$daemon_pid" ]; then kill -TERM "$daemon_pid" 2>/dev/null || true; wait "$daemon_pid" 2>/dev/null || true; fi
  "$lab" down >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
config=$work/sluice.toml
s() { "$sluice" "$@" --config "$config"; }

echo "==> making a PKI with easy-rsa in $work/pki"
scripts/gen-pki.sh "$work/pki" >/dev/null
pki=$work/pki

echo "==> the appliance and its ports (the lab's veths), then the endpoint through the verbs"
cat > "$config" <<TOML
[appliance]
admin_socket = "$work/run/admin.sock"
state_dir = "$work/state"

[dataplane]
eal_args = ["--no-pci", "--no-huge", "--no-shconf", "--no-telemetry", "-m", "512", "-l", "0-1",
            "--log-level=lib.eal:error", "--log-level=pmd.*:error"]
outside = "outside"

[[dataplane.port]]
name = "outside"
device = "net_af_packet0,iface=sl-outside"
ip = "192.168.50.1/24"

[[dataplane.port]]
name = "inside-a"
device = "net_af_packet1,iface=sl-inside-a"
ip = "172.31.1.5/24"

[[dataplane.port]]
name = "inside-b"
device = "net_af_packet2,iface=sl-inside-b"
ip = "172.31.2.5/24"
TOML
ep=$(s create-client-vpn-endpoint --client-cidr-block 10.200.0.0/20 \
  --server-certificate-arn "$pki/server.crt" --server-key "$pki/server.key" \
  --authentication-options "Type=certificate-authentication,MutualAuthentication={ClientRootCertificateChainArn=$pki/ca.crt}" \
  --dns-name 192.168.50.1 --split-tunnel --description "sluice demo" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["ClientVpnEndpointId"])')
echo "    endpoint $ep"
s associate-client-vpn-target-network --client-vpn-endpoint-id "$ep" --subnet-id subnet-0a0000000000000a1 \
  --vpc-id vpc-0c0000000000000c1 --vpc-cidr 172.31.0.0/16 --cidr 172.31.1.0/24 \
  --availability-zone lab-1a --port inside-a --eni-ip 172.31.1.5 --gateway 172.31.1.1 >/dev/null
s associate-client-vpn-target-network --client-vpn-endpoint-id "$ep" --subnet-id subnet-0b0000000000000b2 \
  --vpc-id vpc-0c0000000000000c1 --vpc-cidr 172.31.0.0/16 --cidr 172.31.2.0/24 \
  --availability-zone lab-1b --port inside-b --eni-ip 172.31.2.5 --gateway 172.31.2.1 >/dev/null
s authorize-client-vpn-ingress --client-vpn-endpoint-id "$ep" --target-network-cidr 172.31.0.0/16 \
  --authorize-all-groups --description "the VPC" >/dev/null
s create-client-vpn-route --client-vpn-endpoint-id "$ep" --destination-cidr-block 172.16.0.0/16 \
  --target-vpc-subnet-id subnet-0a0000000000000a1 --description "peered VPC" >/dev/null
s authorize-client-vpn-ingress --client-vpn-endpoint-id "$ep" --target-network-cidr 172.16.0.0/16 \
  --authorize-all-groups --description "peered VPC" >/dev/null
for verb in describe-client-vpn-endpoints describe-client-vpn-target-networks \
            describe-client-vpn-authorization-rules describe-client-vpn-routes; do
  echo; echo "==> sluice $verb --output table"
  s "$verb" --output table
done
s export-client-vpn-client-configuration --client-vpn-endpoint-id "$ep" --output text \
  --client-certificate "$pki/client1.crt" --client-key "$pki/client1.key" > "$work/client1.ovpn"
echo; echo "==> exported $work/client1.ovpn ($(wc -l < "$work/client1.ovpn") lines)"

echo; echo "==> the lab"
"$lab" up

echo "==> sluice run (in sl-lab-app)"
ip netns exec sl-lab-app "$sluice" run --config "$config" 2> "$work/sluice.log" &
daemon_pid=$!
for _ in $(seq 100); do grep -q "data plane up" "$work/sluice.log" && break; sleep 0.2; done
grep -q "data plane up" "$work/sluice.log" || { cat "$work/sluice.log"; exit 1; }
sed 's/^/    /' "$work/sluice.log"

echo "==> openvpn --config client1.ovpn (in sl-lab-client1)"
ip netns exec sl-lab-client1 openvpn --config "$work/client1.ovpn" --log "$work/client1.log" --verb 3 &
client_pid=$!
for _ in $(seq 200); do grep -q "Initialization Sequence Completed" "$work/client1.log" 2>/dev/null && break; sleep 0.2; done
grep -q "Initialization Sequence Completed" "$work/client1.log" || { cat "$work/client1.log" "$work/sluice.log"; exit 1; }
grep -E "PUSH_REPLY|Initialization Sequence Completed" "$work/client1.log" | sed 's/^/    /'

for dst in 172.31.1.10 172.31.2.10 172.16.0.10; do
  echo; echo "==> ping $dst through the tunnel"
  ip netns exec sl-lab-client1 ping -c 3 -i 0.3 "$dst"
done
echo; echo "==> HTTP GET http://172.31.1.10/ through the tunnel"
ip netns exec sl-lab-client1 python3 -c \
  'import urllib.request; print(urllib.request.urlopen("http://172.31.1.10/", timeout=10).read().decode().strip())'
echo; echo "==> 192.168.100.10 is routed nowhere and authorized for no one: no answer"
if ip netns exec sl-lab-client1 ping -c 2 -W 1 192.168.100.10 >/dev/null; then
  echo "error: an unauthorized destination answered" >&2; exit 1
fi
echo "    (no answer, as expected)"

sleep 5   # the cores report traffic every 5 s
echo; echo "==> sluice describe-client-vpn-connections --output table"
s describe-client-vpn-connections --output table

echo; echo "==> teardown"
kill "$client_pid"; wait "$client_pid" 2>/dev/null || true; client_pid=""
kill -TERM "$daemon_pid"; wait "$daemon_pid"; daemon_pid=""
tail -n 2 "$work/sluice.log" | sed 's/^/    /'
echo; echo "demo finished: a real OpenVPN client reached the VPC through the DPDK data plane"
