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
# Immutable once installed: no box can ever open the runtime binary for writing (CVE-2019-5736),
# and box-runc then needs no protective re-exec at start. Upgrades clear the flag first.
[ -e /usr/local/bin/box-runc ] && chattr -i /usr/local/bin/box-runc 2>/dev/null || true
install -m 0755 "$CARGO_TARGET_DIR/release/box-runc" /usr/local/bin/box-runc
chattr +i /usr/local/bin/box-runc 2>/dev/null || echo "install.sh: chattr +i unsupported here; box-runc will protect itself by re-executing read-only" >&2

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
