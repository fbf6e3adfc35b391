#!/bin/sh
# What the browser tests of the web view (crates/apiary-cli/tests/web.rs) need: Debian's chromium
# and playwright-core from npm (pinned in tests/web/package.json and package-lock.json), installed
# into a cache directory (APIARY_WEB_TESTS_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/apiary/web-tests),
# never into the tree, and reinstalled only when the lock file changes.
# Progress goes to stderr; the last line on stdout is APIARY_WEB_TESTS_DIR=DIR.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"

DIR=${APIARY_WEB_TESTS_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/apiary/web-tests}
mkdir -p "$DIR"
# Test processes may ask at the same time: one installs, the others wait and find it installed.
exec 9>"$DIR/.lock"
flock 9

ensure_browser >&2

stamp=$(cat "$ROOT/tests/web/package.json" "$ROOT/tests/web/package-lock.json" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$DIR/.stamp" 2>/dev/null)" != "$stamp" ] || [ ! -d "$DIR/node_modules/playwright-core" ]; then
    echo "==> installing playwright-core into $DIR" >&2
    cp "$ROOT/tests/web/package.json" "$ROOT/tests/web/package-lock.json" "$DIR/"
    (cd "$DIR" && npm ci --no-audit --no-fund >&2)
    echo "$stamp" >"$DIR/.stamp"
fi
echo "APIARY_WEB_TESTS_DIR=$DIR"
