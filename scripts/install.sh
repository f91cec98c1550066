#!/usr/bin/env bash
# Fresh Debian/Ubuntu machine → Box installed and a box run:
#   sudo ./scripts/install.sh
# Installs the system packages, builds Box's binaries (release), installs them to
# /usr/local/bin ($BINDIR), runs a box through the engine with the offline `host` image, and
# leaves a busybox bundle for box-runc in /var/lib/box/demo-bundle.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (sudo ./scripts/install.sh)" >&2; exit 1; }
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
BINDIR="${BINDIR:-/usr/local/bin}"

# Every binary built and installed; box-supervisor must sit next to box (the lean image of a
# box's supervisor, see docs/engine.md).
BINS="box box-runc box-supervisor"
# shellcheck disable=SC2086 # one argument per name
OUT=$(./scripts/build-release.sh $BINS)
mkdir -p "$BINDIR"
for bin in $BINS; do
    # Immutable once installed: no box can ever open a binary that makes or enters boxes for
    # writing (CVE-2019-5736), and box-runc then needs no protective re-exec at start. Upgrades
    # clear the flag first.
    [ -e "$BINDIR/$bin" ] && chattr -i "$BINDIR/$bin" 2>/dev/null || true
    install -m 0755 "$OUT/$bin" "$BINDIR/$bin"
    chattr +i "$BINDIR/$bin" 2>/dev/null || echo "install.sh: cannot chattr +i $bin here; box-runc then protects itself by re-executing read-only" >&2
done

# Boxes whose restart policy asks for it come back at boot (`box system boot`).
if [ -d /etc/systemd/system ]; then
    sed "s|/usr/local/bin/box|$BINDIR/box|" contrib/systemd/box-boot.service > /etc/systemd/system/box-boot.service
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload && systemctl enable box-boot.service >/dev/null 2>&1 ||
            echo "install.sh: cannot enable box-boot.service" >&2
    fi
fi

# A box through the engine: the host image is made offline on first use.
"$BINDIR/box" run --rm host sh -c 'echo "Hello from a box: hostname $(hostname), pid $$, uid $(id -u)"'

# A bundle for box-runc (see README: box-runc).
BUNDLE=/var/lib/box/demo-bundle
rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/rootfs"/{bin,proc,sys,dev,tmp,etc,root}
cp /bin/busybox "$BUNDLE/rootfs/bin/busybox"
chroot "$BUNDLE/rootfs" /bin/busybox --install -s /bin
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$BUNDLE/rootfs/etc/passwd"
printf 'root:x:0:\n' > "$BUNDLE/rootfs/etc/group"
(cd "$BUNDLE" && "$BINDIR/box-runc" spec)
jq '.process.terminal = false | .process.args = ["echo", "Hello from box-runc"]' \
    "$BUNDLE/config.json" > "$BUNDLE/config.json.new"
mv "$BUNDLE/config.json.new" "$BUNDLE/config.json"
"$BINDIR/box-runc" run --bundle "$BUNDLE" "demo-$$"
echo "install.sh: $BINS installed to $BINDIR; box-runc demo bundle in $BUNDLE"
