#!/usr/bin/env bash
# Pull + unpack throughput: a ~200 MB, 5-layer image (half incompressible, half compressible data,
# ~120 MB gzip) from a local docker-registry on 127.0.0.1, in one hyperfine run:
#   box      `box pull` (registry client + streaming parallel unpack)
#   podman   podman pull --tls-verify=false into a private --root
#   skopeo   skopeo copy to an OCI layout + umoci unpack
#   floor    gzip -dc | tar -x of the same layer blobs, one after another
# Stores are cleared before every run (--prepare).
#
#   sudo bench/pull.sh              # RUNS=5 by default
#
# With BOX_PEER_VIEW set, the whole benchmark runs inside that view (podman needs it on this
# project's hosts); every contender pays the same.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
if [ -n "${BOX_PEER_VIEW:-}" ] && [ -z "${PEER_VIEW:-}" ]; then
    exec "$BOX_PEER_VIEW" "$HERE/pull.sh" "$@"
fi
export PATH="/root/.cargo/bin:$HOME/.cargo/bin:$PATH"
RUNS="${RUNS:-5}"
BENCH_DIR="${BENCH_DIR:-/var/tmp/box-bench-pull}"
for tool in hyperfine docker-registry skopeo umoci podman jq python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool: run scripts/install-deps.sh" >&2; exit 1; }
done
if [ -z "${BOX_BIN:-}" ]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
    BOX_BIN="$("$HERE/../scripts/build-release.sh" box)/box"
fi

rm -rf "$BENCH_DIR"; mkdir -p "$BENCH_DIR"/{layers,results}
D="$BENCH_DIR"

# The image: 5 layers of ~40 MB (24 MB random, 16 MB text), written as an OCI layout.
python3 - "$D" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
d = sys.argv[1]
blobs = os.path.join(d, "oci", "blobs", "sha256"); os.makedirs(blobs)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    open(os.path.join(blobs, h), "wb").write(data); return "sha256:" + h
layers, diff_ids = [], []
text = b"".join(b"line %08d: the quick brown fox jumps over the lazy dog\n" % i for i in range(300000))
for n in range(5):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for k in range(8):
            for name, data in ((f"l{n}/rand{k}.bin", os.urandom(3 << 20)), (f"l{n}/text{k}.txt", text[: 2 << 20])):
                ti = tarfile.TarInfo(name); ti.size = len(data); ti.mode = 0o644
                t.addfile(ti, io.BytesIO(data))
    tar = buf.getvalue()
    gz = gzip.compress(tar, compresslevel=6, mtime=0)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids},
                     "config": {"Cmd": ["/bin/sh"]}}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
    "layers": layers}).encode()
md = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md,
    "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "big"}}]}, open(os.path.join(d, "oci", "index.json"), "w"))
open(os.path.join(d, "oci", "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
open(os.path.join(d, "layers.txt"), "w").write("\n".join(l["digest"][7:] for l in layers) + "\n")
print("image: %.0f MB compressed, %d layers" % (sum(l["size"] for l in layers) / 1e6, len(layers)), file=sys.stderr)
PY

# The registry, killed by pid on exit.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$D/registry.yml" <<YML
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $D/registry
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$D/registry.yml" > "$D/registry.log" 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true; wait $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
REF="127.0.0.1:$PORT/bench/big:1"
skopeo copy --quiet --dest-tls-verify=false "oci:$D/oci:big" "docker://$REF"

FLOOR="for h in \$(cat $D/layers.txt); do mkdir -p $D/floor/\$h; gzip -dc $D/oci/blobs/sha256/\$h | tar -x -C $D/floor/\$h; done"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$D/results/pull.json" \
    -n box --prepare "rm -rf $D/box" "$BOX_BIN --root $D/box pull -q --tls-verify=false $REF" \
    -n podman --prepare "rm -rf $D/podman $D/podrun" \
        "podman --root $D/podman --runroot $D/podrun --storage-driver overlay pull -q --tls-verify=false $REF" \
    -n skopeo+umoci --prepare "rm -rf $D/sk $D/bundle" \
        "skopeo copy --quiet --src-tls-verify=false docker://$REF oci:$D/sk:big && umoci unpack --image $D/sk:big $D/bundle" \
    -n floor --prepare "rm -rf $D/floor" "$FLOOR" >&2

jq -r '.results as $r | ($r | map({(.command): .median}) | add) as $m |
    ($r[] | "\(.command)\t median \(.median * 1000 | floor) ms"),
    "box/podman\t \(($m.box / $m.podman) * 100 | floor / 100)",
    "box/floor\t \(($m.box / $m.floor) * 100 | floor / 100)",
    "box/skopeo+umoci\t \(($m.box / $m["skopeo+umoci"]) * 100 | floor / 100)"' "$D/results/pull.json"
for s in box podman sk bundle floor; do rm -rf "${D:?}/$s"; done
