#!/bin/sh
# One command on a fresh machine: install what apiary needs, build it, then load and attach the
# built-in example (a getppid() counter), show it counting, and clean up.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
ensure_mounts
ensure_cargo

echo "==> building apiary (release)"
cargo build --release -q -p apiary-cli
APIARY=$PWD/target/release/apiary

echo "==> compiling examples/count_getppid.bpf.c"
OBJ=target/examples/count_getppid.bpf.o
mkdir -p target/examples
clang -target bpf -O2 -g -mcpu=v3 -I/usr/include/$(uname -m)-linux-gnu -c examples/count_getppid.bpf.c -o "$OBJ"

# A separate store and pin directory, so the demo never touches a real installation.
export APIARY_STATE_DIR="${APIARY_STATE_DIR:-$(mktemp -d /tmp/apiary-demo.XXXXXX)}"
export APIARY_BPFFS="${APIARY_BPFFS:-/sys/fs/bpf/apiary-demo-$$}"
run() { echo "\$ apiary $*" >&2; as_root env APIARY_STATE_DIR="$APIARY_STATE_DIR" APIARY_BPFFS="$APIARY_BPFFS" "$APIARY" "$@"; }
ID=""
cleanup() { [ -z "$ID" ] || as_root env APIARY_STATE_DIR="$APIARY_STATE_DIR" APIARY_BPFFS="$APIARY_BPFFS" "$APIARY" unload --force "$ID" >/dev/null 2>&1 || true; }
trap cleanup EXIT

run load file --path "$OBJ" --programs tracepoint:count_getppid -m demo=readme -o json > target/examples/loaded.json
cat target/examples/loaded.json
ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["id"])' target/examples/loaded.json)
run attach "$ID" tracepoint --tracepoint syscalls/sys_enter_getppid
run list programs
echo "==> calling getppid() 1000 times"
python3 -c 'import os
for _ in range(1000): os.getppid()'
run map dump "$ID:counts"
run get program "$ID"
run unload --force "$ID"
ID=""
as_root rm -rf "$APIARY_BPFFS"
trap - EXIT
echo "==> done: the example was loaded, attached, counted getppid() calls, and was unloaded"
