#!/usr/bin/env bash
# Fresh Debian/Ubuntu machine → Box installed and a demo box run:
#   sudo ./scripts/install.sh
# Installs the system packages, builds box-runc (release), installs it to /usr/local/bin, makes a
# busybox bundle in /var/lib/box/demo-bundle and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo ./scripts/install.sh)" >&2; exit 1; }
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
cargo build --release --bin box-runc
install -m 0755 "$CARGO_TARGET_DIR/release/box-runc" /usr/local/bin/box-runc

BUNDLE=/var/lib/box/demo-bundle
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/rootfs"/{bin,proc,sys,dev,tmp,etc,root}
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
chroot "$BUNDLE/rootfs" /bin/busybox --install -s /bin
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$BUNDLE/rootfs/etc/passwd"
printf 'root:x:0:\n' > "$BUNDLE/rootfs/etc/group"
(cd "$BUNDLE" && box-runc spec)
# Non-interactive demo: no terminal, print something from inside the box.
jq '.process.terminal = false
    | .process.args = ["sh", "-c", "echo Hello from a box: hostname $(hostname), pid $$, uid $(id -u)"]' \
    "$BUNDLE/config.json" > "$BUNDLE/config.json.new"
mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"
box-runc run --bundle "$BUNDLE" "demo-$$"
echo "install.sh: box-runc installed to /usr/local/bin; demo bundle in $BUNDLE"
