#!/usr/bin/env bash
# Box's networks side by side with podman's and with a bare veth pair, in one run:
#   throughput: iperf3 (TCP, host -> box, $SECONDS_PER s each) to
#     - veth:         a bare veth pair into a namespace made here (the floor bridge mode adds to),
#     - box-bridge:   a box on Box's default bridge (its address), podman-bridge: the same with
#                     podman's default network (netavark),
#     - box-pasta, box-slirp4netns: rootless boxes through their published port on 127.0.0.1,
#       podman-slirp4netns: rootless podman's best mode here (podman 4.3 has no pasta), same way;
#   connection latency through a published port (connect, GET, read to the end: hyperfine over
#   bash's /dev/tcp) to a busybox httpd: box bridge DNAT (loopback), podman bridge (loopback),
#   a userland relay (socat, what a docker-proxy-style forwarder costs) in front of Box's box,
#   the box's address directly (no forwarding at all), rootless box pasta and slirp4netns.
#
#   sudo BOX_PEER_VIEW=$PWD/../shared/tools/peer-view bench/network.sh    # SECONDS_PER=5 RUNS=200
#
# Rootless runs use the user $BENCH_USER (default boxtest, made by the tests; needs /etc/subuid).
# Traffic stays on loopback, the bridges and the namespaces made here. Summary on stdout, iperf3
# and hyperfine JSON in $BENCH_DIR/results.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "network.sh: run as root" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BOX_PEER_VIEW:-}" ] && [ -z "${PEER_VIEW:-}" ]; then
    exec "$BOX_PEER_VIEW" "$HERE/network.sh" "$@"
fi
export PATH="/root/.cargo/bin:$HOME/.cargo/bin:$PATH"
SECONDS_PER="${SECONDS_PER:-5}"
RUNS="${RUNS:-200}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/box-bench-net}"
BENCH_USER="${BENCH_USER:-boxtest}"
BOX_DATA=/var/tmp/bxnet
for tool in iperf3 hyperfine podman jq busybox socat pasta slirp4netns; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
id "$BENCH_USER" >/dev/null 2>&1 || { echo "no user $BENCH_USER (BENCH_USER=…)" >&2; exit 1; }
if [ -z "${BOX_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
    (cd "$HERE/.." && cargo build --release --bin box --bin box-supervisor >&2)
    BOX_BIN="$CARGO_TARGET_DIR/release/box"
fi

P="$BENCH_DIR/podman"
U="$BENCH_DIR/user"   # the rootless user's home: box and podman data
PODMAN="podman --root $P/root --runroot $P/runroot --tmpdir $P/tmp --cgroup-manager cgroupfs --events-backend file --log-level error"
UPODMAN="podman --root $U/podman --runroot $U/run/podman --runtime runc --cgroup-manager cgroupfs --events-backend file --log-level error"
BOX="$BENCH_DIR/bin/box --root $BOX_DATA"
as_user() {
    setpriv --reuid "$BENCH_USER" --regid "$BENCH_USER" --init-groups env -i HOME="$U" \
        XDG_RUNTIME_DIR="$U/run" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        bash -c "cd $U && $1"
}
VETH_NS=bxbench-veth
cleanup() {
    ip netns del "$VETH_NS" 2>/dev/null || true
    ip link del bxbv0 2>/dev/null || true
    [ -n "${SOCAT_PID:-}" ] && kill "$SOCAT_PID" 2>/dev/null || true
    [ -n "${IPERF_VETH:-}" ] && kill "$IPERF_VETH" 2>/dev/null || true
    [ -x "$BENCH_DIR/bin/box" ] && $BOX system reset -f >/dev/null 2>&1 || true
    [ -d "$P" ] && $PODMAN rm -af -t 0 >/dev/null 2>&1 || true
    [ -d "$P" ] && $PODMAN system reset -f >/dev/null 2>&1 || true
    if [ -d "$U" ]; then
        as_user "./box rm -f nb-pasta nb-slirp >/dev/null 2>&1; $UPODMAN rm -af -t 0 >/dev/null 2>&1; true" || true
        as_user "$UPODMAN system reset -f >/dev/null 2>&1; true" || true
    fi
    { grep -F -e " $BENCH_DIR/" -e " $BOX_DATA/" /proc/self/mountinfo || true; } | awk '{print $5}' | sort -r |
        while read -r m; do umount -l "$m" || true; done
    rm -rf "$BENCH_DIR" "$BOX_DATA"
}
cleanup
mkdir -p "$BENCH_DIR/results" "$BENCH_DIR/bin" "$P"/{root,runroot,tmp} "$U/run"
chmod 0711 "$BENCH_DIR"
trap cleanup EXIT
install -m 0755 "$BOX_BIN" "$BENCH_DIR/bin/box"
install -m 0755 "$(dirname "$BOX_BIN")/box-supervisor" "$BENCH_DIR/bin/box-supervisor"
export TMPDIR="$P/tmp"

# One root file system for every box: busybox (sh, httpd) and iperf3 with its libraries.
R="$BENCH_DIR/rootfs"
mkdir -p "$R"/{bin,usr/bin,proc,sys,dev,tmp,etc,root,www}
cp /bin/busybox "$R/bin/busybox"
for a in sh httpd sleep cat true; do ln -s busybox "$R/bin/$a"; done
cp /usr/bin/iperf3 "$R/usr/bin/iperf3"
for lib in $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
    mkdir -p "$R$(dirname "$lib")" && cp -L "$lib" "$R$lib"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
echo 'hello' > "$R/www/index.html"
cp -a "$R" "$U/rootfs"
cp "$BENCH_DIR/bin/box" "$BENCH_DIR/bin/box-supervisor" "$U/"
chown -R "$BENCH_USER:$BENCH_USER" "$U"

NOFILE=$(ulimit -Hn); [ "$NOFILE" = unlimited ] || [ "$NOFILE" -gt 1048576 ] && NOFILE=1048576
NPROC=$(ulimit -Hu); { [ "$NPROC" = unlimited ] || [ "$NPROC" -gt 4096 ]; } && NPROC=4096
ULIMITS="--ulimit nofile=$NOFILE:$NOFILE --ulimit nproc=$NPROC:$NPROC"

gbps() { jq -r '.end.sum_received.bits_per_second / 1e9 * 100 | round / 100' "$1"; }
iperf_to() { # NAME ADDR [PORT]
    local out="$BENCH_DIR/results/iperf-$1.json"
    for _ in $(seq 50); do
        iperf3 -c "$2" -p "${3:-5201}" -t "$SECONDS_PER" -J > "$out" 2>/dev/null && break
        sleep 0.2
    done
    echo "$1 $(gbps "$out")"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null \
    || echo $((20000 + RANDOM % 20000)); }

echo "== throughput ($SECONDS_PER s each)" >&2
THROUGHPUT="$BENCH_DIR/results/throughput.txt"
: > "$THROUGHPUT"
# The floor: a bare veth pair.
ip netns add "$VETH_NS"
ip link add bxbv0 type veth peer name eth0 netns "$VETH_NS"
ip addr add 10.199.0.1/24 dev bxbv0 && ip link set bxbv0 up
ip -n "$VETH_NS" addr add 10.199.0.2/24 dev eth0 && ip -n "$VETH_NS" link set eth0 up
ip -n "$VETH_NS" link set lo up
ip netns exec "$VETH_NS" iperf3 -s >/dev/null 2>&1 & IPERF_VETH=$!
iperf_to veth 10.199.0.2 >> "$THROUGHPUT"
kill "$IPERF_VETH"; IPERF_VETH=

# Rootful bridges.
$BOX run -d --name nb-bridge --rootfs "$R" /usr/bin/iperf3 -s >/dev/null
BIP=$($BOX inspect nb-bridge | jq -r '.[0].NetworkSettings.IPAddress')
iperf_to box-bridge "$BIP" >> "$THROUGHPUT"
$PODMAN run -d --name pd-bridge $ULIMITS --rootfs "$R" /usr/bin/iperf3 -s >/dev/null
PIP=$($PODMAN inspect --format '{{.NetworkSettings.IPAddress}}' pd-bridge)
iperf_to podman-bridge "$PIP" >> "$THROUGHPUT"
$BOX rm -f nb-bridge >/dev/null; $PODMAN rm -f -t 0 pd-bridge >/dev/null

# Rootless, through each one's published port on the host's loopback.
for mode in pasta slirp4netns; do
    port=$(free_port)
    as_user "./box run -d --name nb-$mode --network $mode -p $port:5201 --rootfs $U/rootfs /usr/bin/iperf3 -s >/dev/null"
    iperf_to "box-$mode" 127.0.0.1 "$port" >> "$THROUGHPUT"
    as_user "./box rm -f nb-$mode >/dev/null"
done
port=$(free_port)
as_user "$UPODMAN run -d --name pd-slirp --network slirp4netns -p $port:5201 --rootfs $U/rootfs /usr/bin/iperf3 -s >/dev/null"
iperf_to podman-slirp4netns 127.0.0.1 "$port" >> "$THROUGHPUT"
as_user "$UPODMAN rm -f -t 0 pd-slirp >/dev/null"

echo "== published-port latency ($RUNS runs)" >&2
HTTPD='/bin/httpd -f -p 80 -h /www'
BPORT=$(free_port); RPORT=$(free_port); PPORT=$(free_port); UPORT=$(free_port); SPORT=$(free_port)
$BOX run -d --name nb-web -p "$BPORT:80" --rootfs "$R" $HTTPD >/dev/null
BIP=$($BOX inspect nb-web | jq -r '.[0].NetworkSettings.IPAddress')
socat "TCP-LISTEN:$RPORT,bind=127.0.0.1,fork,reuseaddr" "TCP:$BIP:80" & SOCAT_PID=$!
$PODMAN run -d --name pd-web $ULIMITS -p "$PPORT:80" --rootfs "$R" $HTTPD >/dev/null
as_user "./box run -d --name nb-pasta --network pasta -p $UPORT:80 --rootfs $U/rootfs $HTTPD >/dev/null"
as_user "./box run -d --name nb-slirp --network slirp4netns -p $SPORT:80 --rootfs $U/rootfs $HTTPD >/dev/null"
get() { echo "exec 3<>/dev/tcp/$1/$2; printf 'GET / HTTP/1.0\r\n\r\n' >&3; cat <&3 >/dev/null"; }
for target in "127.0.0.1 $BPORT" "127.0.0.1 $RPORT" "127.0.0.1 $PPORT" "$BIP 80" "127.0.0.1 $UPORT" "127.0.0.1 $SPORT"; do
    for _ in $(seq 50); do bash -c "$(get $target)" 2>/dev/null && break; sleep 0.2; done
done
hyperfine --shell=bash --runs "$RUNS" --warmup 20 --export-json "$BENCH_DIR/results/latency.json" \
    -n box-dnat "$(get 127.0.0.1 "$BPORT")" \
    -n userland-relay "$(get 127.0.0.1 "$RPORT")" \
    -n podman-bridge "$(get 127.0.0.1 "$PPORT")" \
    -n box-direct "$(get "$BIP" 80)" \
    -n box-pasta "$(get 127.0.0.1 "$UPORT")" \
    -n box-slirp4netns "$(get 127.0.0.1 "$SPORT")"

echo
echo "versions: $(podman --version), $(iperf3 --version | head -1), passt $(dpkg-query -W -f '${Version}' passt 2>/dev/null), $(slirp4netns --version | head -1)"
awk '{v[$1]=$2} END {
    printf "throughput (Gbit/s): veth %s  box-bridge %s  podman-bridge %s  box-pasta %s  box-slirp4netns %s  podman-slirp4netns %s\n",
        v["veth"], v["box-bridge"], v["podman-bridge"], v["box-pasta"], v["box-slirp4netns"], v["podman-slirp4netns"];
    printf "throughput ratios: box-bridge/veth %.2f  box-bridge/podman-bridge %.2f  box-pasta/podman-slirp4netns %.2f  box-slirp4netns/podman-slirp4netns %.2f\n",
        v["box-bridge"]/v["veth"], v["box-bridge"]/v["podman-bridge"], v["box-pasta"]/v["podman-slirp4netns"], v["box-slirp4netns"]/v["podman-slirp4netns"];
}' "$THROUGHPUT"
jq -r '
    (.results | map({key: .command, value: (.median * 1000)}) | from_entries) as $m
    | def r: . * 1000 | round / 1000;
    "latency medians (ms): " + ([$m | to_entries[] | "\(.key) \(.value|r)"] | join("  ")),
    "latency ratios: userland-relay/box-dnat \($m["userland-relay"]/$m["box-dnat"]|r)  podman-bridge/box-dnat \($m["podman-bridge"]/$m["box-dnat"]|r)  box-dnat/box-direct \($m["box-dnat"]/$m["box-direct"]|r)"
' "$BENCH_DIR/results/latency.json"
echo "(JSON in $BENCH_DIR/results)"
