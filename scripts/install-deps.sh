#!/usr/bin/env bash
# Install every system package Box's build, tests and benchmark need (Debian/Ubuntu). Idempotent.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "install-deps.sh: run as root (sudo)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(
    build-essential pkg-config libseccomp-dev  # build (libseccomp crate)
    busybox-static                            # rootfs of every test bundle
    uidmap                                    # newuidmap/newgidmap for rootless multi-range maps
    util-linux iproute2 procps psmisc         # setpriv, unshare, ip, ps
    e2fsprogs                                 # chattr: box-runc is installed immutable
    runc crun hyperfine                       # peers and the start-latency benchmark
    podman containerd                         # interop suites
    docker-registry skopeo                    # registry suites (a local registry on 127.0.0.1)
    nftables                                  # bridge networks: NAT and published ports (nft)
    passt slirp4netns                         # rootless networks (pasta, slirp4netns)
    netavark aardvark-dns iptables            # podman's bridge network, for the network benchmark
    iperf3 socat python3                      # network benchmark
    jq git ca-certificates curl
)
apt-get update
apt-get install -y --no-install-recommends "${PACKAGES[@]}"
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    echo "install-deps.sh: installing Rust with rustup" >&2
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
        --component clippy,rustfmt
fi
