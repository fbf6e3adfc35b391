#!/bin/sh
# The OTLP receiver crates/apiary-cli/tests/metrics.rs runs (tests/otlp/receiver.py) needs the
# official OpenTelemetry protobuf definitions: a venv with tests/otlp/requirements.txt, cached
# (APIARY_OTLP_DIR, default ${XDG_CACHE_HOME:-$HOME/.cache}/apiary/otlp) and rebuilt only when
# the requirements or the Python change. Progress goes to stderr; the last line on stdout is
# APIARY_OTLP_PYTHON=PATH.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$ROOT/scripts/lib.sh"

DIR=${APIARY_OTLP_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/apiary/otlp}
REQ=$ROOT/tests/otlp/requirements.txt
mkdir -p "$DIR"
# Test processes may ask at the same time: one installs, the others wait and find it done.
exec 9>"$DIR/.lock"
flock 9

if [ -x /usr/bin/python3 ]; then py=/usr/bin/python3; else py=$(command -v python3); fi
stamp=$( ("$py" --version; cat "$REQ") | sha256sum | cut -d' ' -f1)
if ! [ -x "$DIR/venv/bin/python" ] || [ "$(cat "$DIR/stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "==> OTLP receiver: venv with opentelemetry-proto ($DIR)" >&2
    rm -rf "$DIR/venv" "$DIR/stamp"
    if ! "$py" -m venv "$DIR/venv" >/dev/null 2>&1; then
        rm -rf "$DIR/venv"
        APT_PACKAGES="python3-venv" ensure_packages
        "$py" -m venv "$DIR/venv"
    fi
    "$DIR/venv/bin/pip" install -q --disable-pip-version-check -r "$REQ"
    echo "$stamp" >"$DIR/stamp"
fi
echo "APIARY_OTLP_PYTHON=$DIR/venv/bin/python"
