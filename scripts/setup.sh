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

# Shell completions and man pages, where bash-completion, zsh, fish and man look for them.
echo "==> installing shell completions and man pages"
as_root mkdir -p /usr/share/bash-completion/completions /usr/share/zsh/vendor-completions \
    /usr/share/fish/vendor_completions.d /usr/local/share/man/man1
"$APIARY" completions bash | as_root tee /usr/share/bash-completion/completions/apiary >/dev/null
"$APIARY" completions zsh | as_root tee /usr/share/zsh/vendor-completions/_apiary >/dev/null
"$APIARY" completions fish | as_root tee /usr/share/fish/vendor_completions.d/apiary.fish >/dev/null
as_root "$APIARY" man -o /usr/local/share/man/man1

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
