#!/bin/sh
# The daemon's per-call latency over its unix socket, its memory (idle and after 1,000
# load/unload cycles), and a CO-RE load+attach call beside the minimal C libbpf loader (built
# here from bench/minimal_loader.c). Needs root. Prints figures; asserts nothing.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -q -p apiary-cli
target="${CARGO_TARGET_DIR:-$(pwd)/target}"
cc -O2 -o "$target/release/minimal_loader" bench/minimal_loader.c -lbpf
APIARY_MINIMAL_LOADER="$target/release/minimal_loader" APIARY_BIN="$target/release/apiary" \
    cargo bench -q -p apiary-api --bench daemon
