#!/usr/bin/env bash
# Start latency: create+start+wait+delete of /bin/true from a busybox bundle (`RUNTIME run`), box-runc
# side by side with crun and runc, and the floor (unshare + chroot of the same command); rootful and
# rootless (as the user boxtest, `spec --rootless` bundles), each in one hyperfine run.
#
#   sudo bench/runtime-start.sh                 # RUNS=50 WARMUP=5 by default
#   sudo BOX_RUNC=/usr/local/bin/box-runc RUNS=100 bench/runtime-start.sh
#
# Peers cannot run on this project's hybrid-cgroup hosts as they are: with BOX_PEER_VIEW set, the
# whole benchmark (box-runc and the floor too, so all pay the same) runs inside that view.
# Results: $BENCH_DIR/results/{rootful,rootless}.json (hyperfine JSON) and a summary on stdout.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "runtime-start.sh: run as root" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BOX_PEER_VIEW:-}" ] && [ -z "${PEER_VIEW:-}" ]; then
    exec "$BOX_PEER_VIEW" "$HERE/runtime-start.sh" "$@"
fi
export PATH="/root/.cargo/bin:$HOME/.cargo/bin:$PATH"
RUNS="${RUNS:-50}"
WARMUP="${WARMUP:-5}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/box-bench}"
USER_NAME=boxtest
for tool in hyperfine crun runc jq setpriv unshare busybox; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done

if [ -z "${BOX_RUNC:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
    BOX_RUNC="$("$HERE/../scripts/build-release.sh" box-runc)/box-runc"
fi

# The rootless user, as the test harness makes it.
id -u "$USER_NAME" >/dev/null 2>&1 || useradd -m -s /bin/sh "$USER_NAME"
for f in /etc/subuid /etc/subgid; do
    touch "$f"
    grep -q "^$USER_NAME:" "$f" || echo "$USER_NAME:$((200000 + $(id -u "$USER_NAME") * 65536)):65536" >> "$f"
done
UID_B=$(id -u "$USER_NAME"); GID_B=$(id -g "$USER_NAME")

{ [ -e "$BENCH_DIR/bin/box-runc" ] && chattr -i "$BENCH_DIR/bin/box-runc"; } 2>/dev/null || true
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/results" "$BENCH_DIR/bin"
install -m 0755 "$BOX_RUNC" "$BENCH_DIR/bin/box-runc"   # readable by the rootless user
# As scripts/install.sh installs it: immutable, so no protective re-exec (BOX_BENCH_MUTABLE=1 to
# measure the re-exec path instead).
[ -n "${BOX_BENCH_MUTABLE:-}" ] || chattr +i "$BENCH_DIR/bin/box-runc"
BOX="$BENCH_DIR/bin/box-runc"
trap 'rm -rf "$BENCH_DIR/rootful" "$BENCH_DIR/rootless"' EXIT

# make_bundle DIR [--rootless]: busybox rootfs + `box-runc spec` config running /bin/true.
make_bundle() {
    local dir=$1; shift
    mkdir -p "$dir/bundle/rootfs"/{bin,proc,sys,dev,tmp,etc} "$dir/state" "$dir/xdg"
    cp /bin/busybox "$dir/bundle/rootfs/bin/busybox"
    ln -s busybox "$dir/bundle/rootfs/bin/true"
    ln -s busybox "$dir/bundle/rootfs/bin/sh"
    echo 'root:x:0:0:root:/root:/bin/sh' > "$dir/bundle/rootfs/etc/passwd"
}
as_user() { setpriv --reuid "$UID_B" --regid "$GID_B" --init-groups env -i PATH="$PATH" HOME=/home/$USER_NAME XDG_RUNTIME_DIR="$BENCH_DIR/rootless/xdg" "$@"; }
finish_config() {
    jq '.process.terminal = false | .process.args = ["/bin/true"] | .root.readonly = true' \
        "$1/config.json" > "$1/config.json.new" && mv "$1/config.json.new" "$1/config.json"
}

# Rootful.
R="$BENCH_DIR/rootful"
make_bundle "$R"
(cd "$R/bundle" && "$BOX" spec) && finish_config "$R/bundle"
# Rootless: the bundle belongs to the rootless user, who also generates its config.
L="$BENCH_DIR/rootless"
make_bundle "$L"
chown -R "$UID_B:$GID_B" "$L"; chmod 0700 "$L/xdg"; chmod 0755 "$BENCH_DIR" "$L"
(cd "$L/bundle" && as_user "$BOX" spec --rootless) && finish_config "$L/bundle"
chown "$UID_B:$GID_B" "$L/bundle/config.json"

ID='b${EPOCHREALTIME/./}'   # unique per run, no fork
SETPRIV="setpriv --reuid $UID_B --regid $GID_B --init-groups env XDG_RUNTIME_DIR=$L/xdg"

echo "== rootful ($RUNS runs, $WARMUP warmup)" >&2
hyperfine --shell=bash --runs "$RUNS" --warmup "$WARMUP" --export-json "$BENCH_DIR/results/rootful.json" \
    -n box-runc "$BOX --root $R/state/box run --bundle $R/bundle $ID" \
    -n crun "crun --root $R/state/crun run --bundle $R/bundle $ID" \
    -n runc "runc --root $R/state/runc run --bundle $R/bundle $ID" \
    -n floor "unshare --mount --uts --ipc --pid --fork chroot $R/bundle/rootfs /bin/true"

echo "== rootless as $USER_NAME ($RUNS runs, $WARMUP warmup)" >&2
hyperfine --shell=bash --runs "$RUNS" --warmup "$WARMUP" --export-json "$BENCH_DIR/results/rootless.json" \
    -n box-runc "$SETPRIV $BOX --root $L/state/box run --bundle $L/bundle $ID" \
    -n crun "$SETPRIV crun --root $L/state/crun run --bundle $L/bundle $ID" \
    -n runc "$SETPRIV runc --root $L/state/runc run --bundle $L/bundle $ID" \
    -n floor "$SETPRIV unshare -r --mount --uts --ipc --pid --fork chroot $L/bundle/rootfs /bin/true"

summary() {
    jq -r --arg mode "$1" '
        (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
        | "\($mode): medians (ms): box-runc \($m["box-runc"]*100|round/100)  crun \($m.crun*100|round/100)  runc \($m.runc*100|round/100)  floor \($m.floor*100|round/100)",
          "\($mode): ratios: box/crun \($m["box-runc"]/$m.crun*100|round/100)  box/runc \($m["box-runc"]/$m.runc*100|round/100)  box/floor \($m["box-runc"]/$m.floor*100|round/100)"
    ' "$BENCH_DIR/results/$1.json"
}
echo
summary rootful
summary rootless
echo "(hyperfine JSON in $BENCH_DIR/results)"
