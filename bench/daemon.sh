#!/bin/sh
# The daemon's per-call latency over its unix socket and its memory (idle and after 1,000
# load/unload cycles). Needs root. Prints figures; asserts nothing.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -q -p apiary-cli
target="${CARGO_TARGET_DIR:-target}"
APIARY_BIN="$target/release/apiary" cargo bench -q -p apiary-api --bench daemon
