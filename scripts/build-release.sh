#!/usr/bin/env bash
# Builds Box's release binaries and prints the directory that holds them:
#   dir=$(scripts/build-release.sh [BIN…])      # default: box box-runc box-supervisor
#
# On glibc Linux with a static libseccomp (Debian's libseccomp-dev ships it) the binaries are
# linked statically and not position-independent, as runc's release binaries are: no dynamic
# loader, and no relocation of the 16 MB binary's ~500 KB of pointer tables (each page written,
# so copied) before main. That is most of what a short command costs: `box enter -- true` 3.5 →
# 2.3 ms, `box --version` 2.1 → 1.2 ms here. The price: the binaries' own code and data sit at
# fixed addresses (no ASLR for them; libraries are linked in). BOX_DYNAMIC=1 builds ordinary
# dynamic PIE binaries instead (the test suite's debug builds always are).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:/root/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/box-target}"
BINS="${*:-box box-runc box-supervisor}"
# shellcheck disable=SC2086 # one --bin per name
BIN_ARGS=$(printf -- '--bin %s ' $BINS)
host=$(rustc -vV | sed -n 's/^host: //p')
seccomp_lib=$(dirname "$(ls /usr/lib/*/libseccomp.a /usr/lib/libseccomp.a 2>/dev/null | head -n1)" 2>/dev/null || true)
if [ "${BOX_DYNAMIC:-0}" != 1 ] && [[ $host == *-linux-gnu ]] && [ -f "$seccomp_lib/libseccomp.a" ]; then
    # --target keeps these flags off build scripts and proc-macros (built for the host).
    # shellcheck disable=SC2086
    LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH="$seccomp_lib" \
        RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
        cargo build --release --target "$host" $BIN_ARGS >&2
    echo "$CARGO_TARGET_DIR/$host/release"
else
    # shellcheck disable=SC2086
    cargo build --release $BIN_ARGS >&2
    echo "$CARGO_TARGET_DIR/release"
fi
