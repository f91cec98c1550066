#!/usr/bin/env bash
# Box's networks side by side with podman's and with a bare veth pair, in one run:
#   throughput: iperf3 (TCP, host -> box, $SECONDS_PER s each, $ROUNDS rounds taking turns; medians) to
#     - veth:         a bare veth pair into a namespace made here (the floor bridge mode adds to),
#     - box-bridge:   a box on Box's default bridge (its address), podman-bridge: the same with
#                     podman's default network (netavark),
#     - box-pasta, box-slirp4netns: rootless boxes through their published port on 127.0.0.1,
#       podman-slirp4netns: rootless podman's best mode here (podman 4.3 has no pasta), same way;
#   connection latency through a published port (connect, GET, read to the end, in one Python
#   process, targets taking turns) to a busybox httpd: box bridge DNAT (loopback), podman bridge (loopback),
#   a userland relay (socat, what a docker-proxy-style forwarder costs) in front of Box's box,
#   the box's address directly (no forwarding at all), rootless box pasta and slirp4netns, rootless
#   podman slirp4netns.
#
#   sudo BOX_PEER_VIEW=$PWD/../shared/tools/peer-view bench/network.sh  # ROUNDS=3 SECONDS_PER=5 RUNS=1000
#
# Rootless runs use the user $BENCH_USER (default boxtest, made by the tests; needs /etc/subuid).
# Traffic stays on loopback, the bridges and the namespaces made here. Summary on stdout, iperf3
# JSON and the latency table in $BENCH_DIR/results.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "network.sh: run as root" >&2; exit 1; }
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BOX_PEER_VIEW:-}" ] && [ -z "${PEER_VIEW:-}" ]; then
    exec "$BOX_PEER_VIEW" "$HERE/network.sh" "$@"
fi
export PATH="/root/.cargo/bin:$HOME/.cargo/bin:$PATH"
SECONDS_PER="${SECONDS_PER:-5}"
RUNS="${RUNS:-1000}"
ROUNDS="${ROUNDS:-3}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/box-bench-net}"
BENCH_USER="${BENCH_USER:-boxtest}"
BOX_DATA=/var/tmp/bxnet
for tool in iperf3 python3 podman jq busybox socat pasta slirp4netns; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
id "$BENCH_USER" >/dev/null 2>&1 || { echo "no user $BENCH_USER (BENCH_USER=…)" >&2; exit 1; }
if [ -z "${BOX_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
    BOX_BIN="$("$HERE/../scripts/build-release.sh" box box-supervisor)/box"
fi

P="$BENCH_DIR/podman"
U=/var/tmp/bxnu        # the rootless user's home (short: unix socket paths below it)
PODMAN="podman --root $P/root --runroot $P/runroot --tmpdir $P/tmp --cgroup-manager cgroupfs --events-backend file --log-level error"
UPODMAN="podman --root $U/podman --runroot $U/run/podman --runtime runc --cgroup-manager cgroupfs --events-backend file --log-level error"
BOX="$BENCH_DIR/bin/box --root $BOX_DATA"
# Box's default subnet (10.88.0.0/16) is podman's too: the benchmark gives Box a bridge of its own.
export BOX_CONFIG="$BENCH_DIR/box.toml"
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
    rm -rf "$BENCH_DIR/rootfs" "$BENCH_DIR/bin" "$P" "$BOX_DATA" "$U"
}
cleanup
rm -rf "$BENCH_DIR"
mkdir -p "$BENCH_DIR/results" "$BENCH_DIR/bin" "$P"/{root,runroot,tmp} "$U/run"
printf '[network]\nbridge = "bxbench0"\nsubnet = "10.87.0.0/16"\n' > "$BOX_CONFIG"
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
iperf_to() { # NAME ADDR [PORT]: one measurement, appended to $THROUGHPUT
    local out="$BENCH_DIR/results/iperf-$1-$ROUND.json"
    for _ in $(seq 50); do
        iperf3 -c "$2" -p "${3:-5201}" -t "$SECONDS_PER" -J > "$out" 2>/dev/null && break
        sleep 0.2
    done
    echo "$1 $(gbps "$out")" >> "$THROUGHPUT"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "== throughput ($ROUNDS rounds, $SECONDS_PER s each)" >&2
THROUGHPUT="$BENCH_DIR/results/throughput.txt"
: > "$THROUGHPUT"
# Every server first: the floor (a bare veth pair), rootful bridges, rootless boxes and podman
# behind published ports on the host's loopback.
ip netns add "$VETH_NS"
ip link add bxbv0 type veth peer name eth0 netns "$VETH_NS"
ip addr add 10.199.0.1/24 dev bxbv0 && ip link set bxbv0 up
ip -n "$VETH_NS" addr add 10.199.0.2/24 dev eth0 && ip -n "$VETH_NS" link set eth0 up
ip -n "$VETH_NS" link set lo up
ip netns exec "$VETH_NS" iperf3 -s >/dev/null 2>&1 & IPERF_VETH=$!
$BOX run -d --name nb-bridge --rootfs "$R" /usr/bin/iperf3 -s >/dev/null
BIP=$($BOX inspect nb-bridge | jq -r '.[0].NetworkSettings.IPAddress')
$PODMAN run -d --name pd-bridge $ULIMITS --rootfs "$R" /usr/bin/iperf3 -s >/dev/null
PIP=$($PODMAN inspect --format '{{.NetworkSettings.IPAddress}}' pd-bridge)
PASTA_PORT=$(free_port); SLIRP_PORT=$(free_port); PSLIRP_PORT=$(free_port)
as_user "./box run -d --name nb-pasta --network pasta -p $PASTA_PORT:5201 --rootfs $U/rootfs /usr/bin/iperf3 -s >/dev/null"
as_user "./box run -d --name nb-slirp --network slirp4netns -p $SLIRP_PORT:5201 --rootfs $U/rootfs /usr/bin/iperf3 -s >/dev/null"
as_user "$UPODMAN run -d --name pd-slirp --network slirp4netns -p $PSLIRP_PORT:5201 --rootfs $U/rootfs /usr/bin/iperf3 -s >/dev/null"
for ROUND in $(seq "$ROUNDS"); do
    iperf_to veth 10.199.0.2
    iperf_to box-bridge "$BIP"
    iperf_to podman-bridge "$PIP"
    iperf_to box-pasta 127.0.0.1 "$PASTA_PORT"
    iperf_to box-slirp4netns 127.0.0.1 "$SLIRP_PORT"
    iperf_to podman-slirp4netns 127.0.0.1 "$PSLIRP_PORT"
done
kill "$IPERF_VETH"; IPERF_VETH=
$BOX rm -f nb-bridge >/dev/null; $PODMAN rm -f -t 0 pd-bridge >/dev/null
as_user "./box rm -f nb-pasta nb-slirp >/dev/null; $UPODMAN rm -f -t 0 pd-slirp >/dev/null"

echo "== published-port latency ($RUNS runs)" >&2
HTTPD='/bin/httpd -f -p 80 -h /www'
BPORT=$(free_port); RPORT=$(free_port); PPORT=$(free_port); UPORT=$(free_port); SPORT=$(free_port)
QPORT=$(free_port)
$BOX run -d --name nb-web -p "$BPORT:80" --rootfs "$R" $HTTPD >/dev/null
BIP=$($BOX inspect nb-web | jq -r '.[0].NetworkSettings.IPAddress')
socat "TCP-LISTEN:$RPORT,bind=127.0.0.1,fork,reuseaddr" "TCP:$BIP:80" & SOCAT_PID=$!
$PODMAN run -d --name pd-web $ULIMITS -p "$PPORT:80" --rootfs "$R" $HTTPD >/dev/null
as_user "./box run -d --name nb-pasta --network pasta -p $UPORT:80 --rootfs $U/rootfs $HTTPD >/dev/null"
as_user "./box run -d --name nb-slirp --network slirp4netns -p $SPORT:80 --rootfs $U/rootfs $HTTPD >/dev/null"
as_user "$UPODMAN run -d --name pd-slirp --network slirp4netns -p $QPORT:80 --rootfs $U/rootfs $HTTPD >/dev/null"
LATENCY="$BENCH_DIR/results/latency.txt"
# Connect, GET, read to the end; the targets take turns so drift hits all alike; per target the
# median and 99th percentile of $RUNS requests (after 50 warm-up rounds).
python3 - "$RUNS" "box-dnat 127.0.0.1 $BPORT" "userland-relay 127.0.0.1 $RPORT" \
    "podman-bridge 127.0.0.1 $PPORT" "box-direct $BIP 80" "box-pasta 127.0.0.1 $UPORT" \
    "box-slirp4netns 127.0.0.1 $SPORT" "podman-slirp4netns 127.0.0.1 $QPORT" > "$LATENCY" <<'PY'
import socket, sys, time
runs = int(sys.argv[1])
targets = [t.split() for t in sys.argv[2:]]
def get(host, port):
    t = time.perf_counter()
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    return time.perf_counter() - t
for name, host, port in targets:          # servers up
    for _ in range(100):
        try:
            get(host, port); break
        except OSError:
            time.sleep(0.1)
times = {name: [] for name, _, _ in targets}
for i in range(runs + 50):
    for name, host, port in targets:
        d = get(host, port)
        if i >= 50:
            times[name].append(d)
for name, _, _ in targets:
    v = sorted(times[name])
    print(name, round(v[len(v) // 2] * 1e6), round(v[int(len(v) * 0.99)] * 1e6))
PY

echo
echo "versions: $(podman --version), $(iperf3 --version | head -1), passt $(dpkg-query -W -f '${Version}' passt 2>/dev/null), $(slirp4netns --version | head -1)"
sort -k1,1 -k2,2n "$THROUGHPUT" | awk '{v[$1] = v[$1] " " $2; n[$1]++} END {
    for (k in v) { split(substr(v[k], 2), a, " "); med[k] = a[int((n[k] + 1) / 2)] }
    printf "throughput medians (Gbit/s): veth %s  box-bridge %s  podman-bridge %s  box-pasta %s  box-slirp4netns %s  podman-slirp4netns %s\n",
        med["veth"], med["box-bridge"], med["podman-bridge"], med["box-pasta"], med["box-slirp4netns"], med["podman-slirp4netns"];
    printf "throughput ratios: box-bridge/veth %.2f  box-bridge/podman-bridge %.2f  box-pasta/podman-slirp4netns %.2f  box-slirp4netns/podman-slirp4netns %.2f\n",
        med["box-bridge"]/med["veth"], med["box-bridge"]/med["podman-bridge"], med["box-pasta"]/med["podman-slirp4netns"], med["box-slirp4netns"]/med["podman-slirp4netns"];
}'
awk '{m[$1]=$2; p[$1]=$3; order[NR]=$1} END {
    line = "latency median/p99 (us):";
    for (i = 1; i <= NR; i++) line = line sprintf("  %s %d/%d", order[i], m[order[i]], p[order[i]]);
    print line;
    printf "latency ratios: userland-relay/box-dnat %.2f  podman-bridge/box-dnat %.2f  box-dnat/box-direct %.2f  podman-slirp4netns/box-pasta %.2f\n",
        m["userland-relay"]/m["box-dnat"], m["podman-bridge"]/m["box-dnat"], m["box-dnat"]/m["box-direct"], m["podman-slirp4netns"]/m["box-pasta"];
}' "$LATENCY"
echo "(iperf3 JSON and the latency table in $BENCH_DIR/results)"
