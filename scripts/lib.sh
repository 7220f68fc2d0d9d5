# Shared helpers for sluice's scripts. Sourced, not run.
# shellcheck shell=bash

# The Debian packages the build, the tests and the demo need.
SLUICE_APT_PACKAGES=(
  pkg-config        # finds libdpdk for the bindings
  libdpdk-dev       # DPDK 22.11: headers, shared libraries, PMD plugins
  libclang-dev      # bindgen, only when regenerating the DPDK bindings
  clang             # bindgen, only when regenerating the DPDK bindings
  g++               # libFuzzer's C++ sources, built when scripts/test.sh lints the fuzz targets
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

# How to get a Rust toolchain that builds sluice (rustup; Debian 12's rustc 1.63 is too old).
SLUICE_RUSTUP_HINT="install Rust with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component rustfmt,clippy"

# The workspace's minimum Rust version (rust-version in Cargo.toml; run from the repository root).
sluice_rust_version() {
  sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n 1
}

# Makes sure cargo is on PATH (rustup installs it under ~/.cargo/bin) and that rustc is at
# least the workspace's rust-version; one clear error and a non-zero status otherwise.
sluice_cargo_env() {
  # HOME may be unset (a systemd unit, cron, `env -i`): the user's home from the passwd entry,
  # for rustup's env file and for cargo and rustup themselves.
  if [ -z "${HOME:-}" ]; then
    HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
    export HOME
  fi
  if ! command -v cargo >/dev/null 2>&1 && [ -n "$HOME" ] && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "error: cargo not found; $SLUICE_RUSTUP_HINT" >&2; return 1; }
  local want have
  want=$(sluice_rust_version)
  have=$(rustc --version 2>/dev/null | awk '{print $2}')
  if [ -z "$have" ]; then
    echo "error: cargo is there but rustc does not run; $SLUICE_RUSTUP_HINT" >&2
    return 1
  fi
  if [ -n "$want" ] && [ "$(printf '%s\n%s\n' "$want" "${have%%-*}" | sort -V | head -n 1)" != "$want" ]; then
    echo "error: rustc $have is older than the workspace's rust-version $want; $SLUICE_RUSTUP_HINT (or rustup update)" >&2
    return 1
  fi
}

# The names of the rustfmt and clippy components that do not work (`cargo fmt`, `cargo clippy`).
sluice_missing_components() {
  local m=()
  cargo fmt --version >/dev/null 2>&1 || m+=(rustfmt)
  cargo clippy --version >/dev/null 2>&1 || m+=(clippy)
  echo "${m[*]}"
}

# Makes sure `cargo fmt` and `cargo clippy` work. With rustup, tries `rustup component add` for
# what is missing first; one clear error and a non-zero status if they still do not.
sluice_rust_components() {
  local missing
  missing=$(sluice_missing_components)
  [ -z "$missing" ] && return 0
  if command -v rustup >/dev/null 2>&1; then
    echo "==> rustup component add $missing"
    # shellcheck disable=SC2086 # one word per component
    rustup component add $missing || true
    missing=$(sluice_missing_components)
    [ -z "$missing" ] && return 0
    echo "error: the Rust components $missing are missing (cargo fmt, cargo clippy) and rustup could not add them; run: rustup component add $missing" >&2
  else
    echo "error: the Rust components $missing are missing (cargo fmt, cargo clippy); $SLUICE_RUSTUP_HINT" >&2
  fi
  return 1
}

# Deletes the test namespaces (tests/src/lib.rs Netns: sl-<tag>-<pid>) whose process is gone,
# killing what still runs in them: a test process killed before its Drops ran (Ctrl-C, a CI
# timeout) leaves its namespaces behind. Namespaces of live processes are left alone.
sluice_remove_stale_namespaces() {
  local ns name rest pid p
  for ns in /run/netns/sl-*; do
    [ -e "$ns" ] || continue
    name=${ns##*/}
    rest=${name#sl-}
    case "$rest" in ?*-?*) ;; *) continue ;; esac   # a tag and a pid
    pid=${rest##*-}
    case "$pid" in 0* | *[!0-9]*) continue ;; esac
    [ -e "/proc/$pid" ] && continue
    echo "==> removing namespace $name, left by process $pid, which is gone" >&2
    for p in $(ip netns pids "$name" 2>/dev/null); do
      kill -9 "$p" 2>/dev/null || [ ! -e "/proc/$p" ] || echo "warning: could not kill $p in $name" >&2
    done
    ip netns del "$name" || echo "warning: could not delete namespace $name" >&2
  done
}

# Puts vm.nr_hugepages back to $1 if it differs and no hugepage is in use (the hugepages test
# restores it itself, unless it is killed first).
sluice_restore_hugepages() {
  local want=$1 nr=/proc/sys/vm/nr_hugepages now total free
  [ -n "$want" ] && [ -w "$nr" ] || return 0
  now=$(cat "$nr")
  [ "$now" = "$want" ] && return 0
  total=$(awk '/^HugePages_Total:/ {print $2}' /proc/meminfo)
  free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo)
  if [ "$total" != "$free" ]; then
    echo "warning: vm.nr_hugepages is $now (was $want) and $((total - free)) pages are in use; left as it is" >&2
    return 0
  fi
  echo "==> vm.nr_hugepages back to $want (was $now)" >&2
  echo "$want" > "$nr" || echo "warning: could not set vm.nr_hugepages back to $want" >&2
}
