#!/usr/bin/env bash
# The engine end to end, side by side in one hyperfine run each:
#   run:  `box run --rm --network none host true` and `… bb true` (bb: the busybox image, imported
#         from the same tarball podman gets) vs `podman run --rm --network none bb true` vs raw
#         `crun run` of /bin/true on a busybox bundle (the floor a box engine adds to); and both
#         engines on their default bridge network (`box run --rm bb true` vs `podman run --rm bb
#         true`, netavark);
#   exec: `box exec B true` into a running box vs `podman exec P true`;
#   RSS:  a running box's supervisor (then the lean `box-supervisor` image) vs conmon of a running
#         podman box.
#
#   sudo BOX_PEER_VIEW=$PWD/../shared/tools/peer-view bench/engine.sh     # RUNS=40 WARMUP=5
#   sudo BOX_BIN=/usr/local/bin/box RUNS=100 bench/engine.sh
#
# `box` and `box-supervisor` are release builds (scripts/build-release.sh, or BOX_BIN and the
# box-supervisor next to it) installed side by side and immutable (as
# scripts/install.sh does: no protective re-exec; BOX_BENCH_MUTABLE=1 measures the re-exec path).
# podman has a private --root/--runroot/--tmpdir, the cgroupfs manager and file events; with
# BOX_PEER_VIEW set the whole benchmark (box too, so all pay the same) runs inside that view, which
# peers need on this project's hybrid-cgroup hosts. Results: $BENCH_DIR/results/*.json (hyperfine)
# and a summary on stdout.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "engine.sh: run as root" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BOX_PEER_VIEW:-}" ] && [ -z "${PEER_VIEW:-}" ]; then
    exec "$BOX_PEER_VIEW" "$HERE/engine.sh" "$@"
fi
export PATH="/root/.cargo/bin:$HOME/.cargo/bin:$PATH"
RUNS="${RUNS:-40}"
WARMUP="${WARMUP:-5}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/box-bench-engine}"
# Box's data dir: short, because attach sockets live below it (unix socket paths are short), and
# on the same file system directory as podman's store ($BENCH_DIR): on an ext4 without a journal
# (this project's machines) making a file costs up to ~20x more in a directory whose block group
# had many files removed in the last minutes, so all tools get the same conditions.
BOX_DATA="${BOX_DATA:-/var/tmp/bxbench}"
for tool in hyperfine podman conmon crun jq busybox tar; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done

if [ -z "${BOX_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
    BOX_BIN="$("$HERE/../scripts/build-release.sh" box box-supervisor)/box"
fi
SUPERVISOR_BIN="$(dirname "$BOX_BIN")/box-supervisor"
[ -x "$SUPERVISOR_BIN" ] || { echo "missing $SUPERVISOR_BIN (it must sit next to box)" >&2; exit 1; }

P="$BENCH_DIR/podman"
cleanup() {
    [ -x "$BENCH_DIR/bin/box" ] && "$BENCH_DIR/bin/box" --root "$BOX_DATA" system reset -f >/dev/null 2>&1 || true
    [ -d "$P" ] && podman --root "$P/root" --runroot "$P/runroot" --tmpdir "$P/tmp" --storage-driver "${PODMAN_DRIVER:-overlay}" \
        --cgroup-manager cgroupfs --events-backend file rm -f -t 0 pd-exec >/dev/null 2>&1 || true
    [ -d "$P" ] && podman --root "$P/root" --runroot "$P/runroot" --tmpdir "$P/tmp" --storage-driver "${PODMAN_DRIVER:-overlay}" \
        system reset -f >/dev/null 2>&1 || true
    { grep -F -e " $BENCH_DIR/" -e " $BOX_DATA/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" || true; done
    for b in box box-supervisor; do
        { [ -e "$BENCH_DIR/bin/$b" ] && chattr -i "$BENCH_DIR/bin/$b"; } 2>/dev/null || true
    done
    rm -rf "$BENCH_DIR/bundle" "$BENCH_DIR/crun" "$P" "$BOX_DATA"
}
cleanup
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/results" "$BENCH_DIR/bin" "$BENCH_DIR/crun" "$P"/{root,runroot,tmp}
trap cleanup EXIT
install -m 0755 "$BOX_BIN" "$BENCH_DIR/bin/box"
install -m 0755 "$SUPERVISOR_BIN" "$BENCH_DIR/bin/box-supervisor"
[ -n "${BOX_BENCH_MUTABLE:-}" ] || chattr +i "$BENCH_DIR/bin/box" "$BENCH_DIR/bin/box-supervisor"
BOX="$BENCH_DIR/bin/box --root $BOX_DATA"
# Box's default bridge subnet (10.88.0.0/16) is podman's too: Box gets one of its own here.
export BOX_CONFIG="$BENCH_DIR/box.toml"
printf '[network]\nbridge = "bxbench1"\nsubnet = "10.85.0.0/16"\n' > "$BOX_CONFIG"

# The busybox rootfs: the crun bundle, and as a tarball the image box and podman import.
B="$BENCH_DIR/bundle"
mkdir -p "$B/rootfs"/{bin,proc,sys,dev,tmp,etc,root}
cp /bin/busybox "$B/rootfs/bin/busybox"
for a in sh true sleep; do ln -s busybox "$B/rootfs/bin/$a"; done
echo 'root:x:0:0:root:/root:/bin/sh' > "$B/rootfs/etc/passwd"
echo 'root:x:0:' > "$B/rootfs/etc/group"
tar -C "$B/rootfs" -cf "$BENCH_DIR/busybox.tar" .
(cd "$B" && crun spec)
jq '.process.terminal = false | .process.args = ["/bin/true"] | .root.readonly = true' \
    "$B/config.json" > "$B/config.json.new" && mv "$B/config.json.new" "$B/config.json"

# podman: private store; overlay (what Debian's podman uses), vfs where overlay cannot be had.
PODMAN_DRIVER="${PODMAN_DRIVER:-overlay}"
PODMAN="podman --root $P/root --runroot $P/runroot --tmpdir $P/tmp --storage-driver $PODMAN_DRIVER --cgroup-manager cgroupfs --events-backend file --log-level error"
if ! $PODMAN import --change 'CMD ["/bin/sh"]' "$BENCH_DIR/busybox.tar" bb >/dev/null 2>"$BENCH_DIR/podman-import.err"; then
    echo "podman with overlay failed ($(tail -1 "$BENCH_DIR/podman-import.err")): using vfs" >&2
    $PODMAN system reset -f >/dev/null 2>&1 || true
    PODMAN_DRIVER=vfs
    PODMAN="podman --root $P/root --runroot $P/runroot --tmpdir $P/tmp --storage-driver vfs --cgroup-manager cgroupfs --events-backend file --log-level error"
    $PODMAN import --change 'CMD ["/bin/sh"]' "$BENCH_DIR/busybox.tar" bb >/dev/null
fi
export TMPDIR="$P/tmp"   # conmon's sockets
# podman 4.3 asks for 1048576 open files and processes as root, which no runtime can set where the
# caller's hard limits are lower (as here): hand it limits it can have, as tests/interop_podman.rs does.
NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 1048576 ] && NOFILE=1048576
NPROC=$(ulimit -Hu); { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 4096 ]; } && NPROC=4096
ULIMITS="--ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=$NPROC:$NPROC"
$BOX import "$BENCH_DIR/busybox.tar" bb >/dev/null
# First use of `host` builds the image: not part of the measurement.
$BOX run --rm host true
$BOX run --rm bb true
$PODMAN run --rm --network none $ULIMITS bb true
$PODMAN run --rm $ULIMITS bb true

ID='b${EPOCHREALTIME/./}'   # unique per run, no fork
echo "== run ($RUNS runs, $WARMUP warmup)" >&2
hyperfine --shell=bash --runs "$RUNS" --warmup "$WARMUP" --export-json "$BENCH_DIR/results/run.json" \
    -n box-host "$BOX run --rm --network none host true" \
    -n box-bb "$BOX run --rm --network none bb true" \
    -n podman "$PODMAN run --rm --network none $ULIMITS bb true" \
    -n crun "crun --root $BENCH_DIR/crun run --bundle $B $ID" \
    -n box-bridge "$BOX run --rm bb true" \
    -n podman-bridge "$PODMAN run --rm $ULIMITS bb true"

$BOX run -d --name bx-exec host sleep 100000 >/dev/null
$PODMAN run -d --network none $ULIMITS --name pd-exec bb sleep 100000 >/dev/null
echo "== exec ($RUNS runs, $WARMUP warmup)" >&2
hyperfine --shell=bash --runs "$RUNS" --warmup "$WARMUP" --export-json "$BENCH_DIR/results/exec.json" \
    -n box-exec "$BOX exec bx-exec true" \
    -n podman-exec "$PODMAN exec pd-exec true"

# RSS of the per-box processes, after the exec runs (each exec went through them).
SUP=$($BOX inspect bx-exec | jq -r '.[0].State.SupervisorPid')
CONMON=$($PODMAN inspect --format '{{.State.ConmonPid}}' pd-exec)
rss() { ps -o rss= -p "$1" | tr -d ' '; }
SUP_RSS=$(rss "$SUP"); CONMON_RSS=$(rss "$CONMON")
grep -E '^(Rss|Pss|Private)' "/proc/$SUP/smaps_rollup" > "$BENCH_DIR/results/supervisor-smaps.txt" || true
grep -E '^(Rss|Pss|Private)' "/proc/$CONMON/smaps_rollup" > "$BENCH_DIR/results/conmon-smaps.txt" || true
pss() { awk '/^Pss:/ {print $2}' "$1"; }
SUP_PSS=$(pss "$BENCH_DIR/results/supervisor-smaps.txt"); CONMON_PSS=$(pss "$BENCH_DIR/results/conmon-smaps.txt")

echo
echo "versions: $(podman --version), $(crun --version | head -1), $(conmon --version | head -1), podman storage $PODMAN_DRIVER"
jq -r '
    (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
    | def r: . * 100 | round / 100;
    "run medians (ms): box host \($m["box-host"]|r)  box bb \($m["box-bb"]|r)  podman \($m.podman|r)  crun run \($m.crun|r)",
    "run ratios: box-host/crun \($m["box-host"]/$m.crun|r)  box-bb/crun \($m["box-bb"]/$m.crun|r)  podman/box-host \($m.podman/$m["box-host"]|r)  podman/box-bb \($m.podman/$m["box-bb"]|r)",
    "bridge network (ms): box \($m["box-bridge"]|r)  podman \($m["podman-bridge"]|r)  podman/box \($m["podman-bridge"]/$m["box-bridge"]|r)  box bridge/none \($m["box-bridge"]/$m["box-bb"]|r)"
' "$BENCH_DIR/results/run.json"
jq -r '
    (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
    | def r: . * 100 | round / 100;
    "exec medians (ms): box \($m["box-exec"]|r)  podman \($m["podman-exec"]|r)  podman/box \($m["podman-exec"]/$m["box-exec"]|r)"
' "$BENCH_DIR/results/exec.json"
echo "RSS (kB): box supervisor $SUP_RSS (PSS $SUP_PSS)  conmon $CONMON_RSS (PSS $CONMON_PSS)  supervisor/conmon $(echo "scale=2; $SUP_RSS/$CONMON_RSS" | bc 2>/dev/null || echo "$SUP_RSS/$CONMON_RSS")"
echo "(hyperfine JSON in $BENCH_DIR/results)"
