# Shared helpers for sluice's scripts. Sourced, not run.
# shellcheck shell=bash

# The Debian packages the build, the tests and the demo need.
SLUICE_APT_PACKAGES=(
  pkg-config        # finds libdpdk for the bindings
  libdpdk-dev       # DPDK 22.11: headers, shared libraries, PMD plugins
  libclang-dev      # bindgen, only when regenerating the DPDK bindings
  clang             # bindgen, only when regenerating the DPDK bindings
  openvpn           # the real OpenVPN 2.6 client for interop and end-to-end tests
  easy-rsa          # test PKIs
  openssl           # inspecting and making test certificates
  iproute2          # network namespaces and veth pairs
  iputils-ping      # ping through the tunnel
  python3           # small test servers inside namespaces
  iperf3            # benchmark traffic
  tcpdump           # captures for golden tests and debugging
  ethtool           # turning off checksum offload on veth peers of the DPDK ports
  procps            # kill and sysctl: test cleanup, signals to the daemon, IP forwarding in labs
  util-linux        # setpriv: test children die with the test process (--pdeathsig)
)

# Installs whatever of SLUICE_APT_PACKAGES is missing; runs apt-get update once, and only when
# something is missing. Idempotent and non-interactive.
sluice_install_packages() {
  local missing=() p
  for p in "${SLUICE_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing Debian packages (${missing[*]}) and not root; run as root or install them" >&2
    return 1
  fi
  echo "==> installing: ${missing[*]}"
  local try
  for try in 1 2 3; do
    if apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"; then
      return 0
    fi
    echo "apt-get failed (try $try); retrying in 5 s (another dpkg may hold the lock)" >&2
    sleep 5
  done
  return 1
}

# Makes sure cargo is on PATH (rustup installs it under ~/.cargo/bin).
sluice_cargo_env() {
  if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found" >&2; return 1; }
}
