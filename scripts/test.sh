#!/usr/bin/env bash
# The one test command (what .ci/run runs): build, every test (root and rootless), the release
# binaries as installed, clippy, rustfmt.
#   sudo ./scripts/test.sh            # as root: privileged tests may not be skipped
#   ./scripts/test.sh -- lifecycle    # extra args go to `cargo test` (e.g. a test name filter)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"  # cache outside the clone
if [ "$(id -u)" = 0 ]; then
    export BOX_REQUIRE_PRIVILEGED="${BOX_REQUIRE_PRIVILEGED:-1}"
fi
if [ -z "${BOX_PEER_VIEW:-}" ] && [ -x ../shared/tools/peer-view ]; then
    BOX_PEER_VIEW="$(cd ../shared/tools && pwd)/peer-view"
    export BOX_PEER_VIEW
fi
THREADS="${BOX_TEST_THREADS:-2}"

[ "${1:-}" = "--" ] && shift
cargo build --workspace --all-targets
cargo test --workspace --no-fail-fast -- --test-threads="$THREADS" "$@"
# The release binaries as scripts/install.sh builds them (static where it can): a box through
# the engine, an environment entered, box-runc answering. Skipped when tests are filtered.
if [ $# -eq 0 ]; then
    REL=$(./scripts/build-release.sh)
    # A short data dir: attach sockets live below it (unix socket paths are short).
    SMOKE=$(mktemp -d /tmp/bxXXXX)
    trap 'rm -rf "$SMOKE"' EXIT
    [ "$("$REL/box" --root "$SMOKE/d" run --rm --network none host echo smoke)" = smoke ]
    mkdir "$SMOKE/proj"
    "$REL/box" init -C "$SMOKE/proj" >/dev/null
    [ "$("$REL/box" enter -C "$SMOKE/proj" -- sh -c 'echo $BOX_ENV')" = proj ]
    "$REL/box-runc" --version >/dev/null
fi
cargo clippy --workspace --all-targets -- -D warnings
cargo fmt --all -- --check
echo "test.sh: all checks passed"
