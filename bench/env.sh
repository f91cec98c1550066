#!/usr/bin/env bash
# Per-directory environments, side by side in one hyperfine run each:
#   init:  `box init` (offline, host busybox) into a fresh directory, `box init --mode system`;
#   enter: `box enter -- /bin/true` against `chroot .box/rootfs /bin/true` (the floor: no
#          namespaces at all) and `unshare -m -p -i -u --fork chroot .box/rootfs /bin/true` (the
#          same namespaces as box enter, from util-linux).
#
#   sudo bench/env.sh                 # RUNS=200 WARMUP=10; BOX_BIN=… for a prebuilt box
#
# Results: $BENCH_DIR/results/*.json (hyperfine) and a summary on stdout.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "env.sh: run as root" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
export PATH="/root/.cargo/bin:$HOME/.cargo/bin:$PATH"
RUNS="${RUNS:-200}"
WARMUP="${WARMUP:-10}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/box-bench-env}"
for tool in hyperfine jq busybox unshare chroot; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
if [ -z "${BOX_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
    BOX_BIN="$("$HERE/../scripts/build-release.sh" box)/box"
fi
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/results" "$BENCH_DIR/proj" "$BENCH_DIR/init"
trap 'rm -rf "$BENCH_DIR/proj" "$BENCH_DIR/init"' EXIT
BOX="$BOX_BIN"

echo "== init ($((RUNS / 10)) runs)" >&2
hyperfine -N --runs "$((RUNS / 10))" --warmup 2 --export-json "$BENCH_DIR/results/init.json" \
    --prepare "rm -rf $BENCH_DIR/init/.box" \
    -n init-busybox "$BOX init -C $BENCH_DIR/init" \
    -n init-system "$BOX init --mode system -C $BENCH_DIR/init"

(cd "$BENCH_DIR/proj" && "$BOX" init 2>/dev/null)
R="$BENCH_DIR/proj/.box/rootfs"
echo "== enter ($RUNS runs)" >&2
hyperfine -N --runs "$RUNS" --warmup "$WARMUP" --export-json "$BENCH_DIR/results/enter.json" \
    -n box-enter "$BOX enter -C $BENCH_DIR/proj -- /bin/true" \
    -n chroot "chroot $R /bin/true" \
    -n unshare-chroot "unshare -m -p -i -u --fork chroot $R /bin/true"

jq -r '
    (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
    | def r: . * 100 | round / 100;
    "init medians (ms): busybox \($m["init-busybox"]|r)  system \($m["init-system"]|r)"
' "$BENCH_DIR/results/init.json"
jq -r '
    (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
    | def r: . * 100 | round / 100;
    "enter medians (ms): box enter \($m["box-enter"]|r)  chroot \($m.chroot|r)  unshare+chroot \($m["unshare-chroot"]|r)",
    "enter ratios: box/chroot \($m["box-enter"]/$m.chroot|r)  box/unshare+chroot \($m["box-enter"]/$m["unshare-chroot"]|r)"
' "$BENCH_DIR/results/enter.json"
echo "(hyperfine JSON in $BENCH_DIR/results)"
