#!/bin/sh
# csi-sanity, the Kubernetes storage SIG's conformance tool for CSI drivers, built from the Go
# module in tests/csi (version pinned in its go.mod) together with that module's stand-in
# controller (tests/csi/controller: the node plugin has no Controller service, and csi-sanity's
# publish tests create their volume through one).
#
#   csi-sanity.sh build    build both into the cache unless they are there
#   csi-sanity.sh path     build if missing, print the cache's bin directory (csi-sanity and
#                          controller are in it)
#
# The cache is ${APIARY_CSI_CACHE:-$HOME/.cache/apiary/csi}/CSI_TEST_VERSION-SOURCE_DIGEST/bin;
# editing go.mod, go.sum or the controller's source changes the key.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODULE=$ROOT/tests/csi

die() { echo "csi-sanity: $*" >&2; exit 1; }

VERSION=$(awk '$1 == "github.com/kubernetes-csi/csi-test/v5" && $2 ~ /^v/ { print $2; exit }' "$MODULE/go.mod")
[ -n "$VERSION" ] || die "no github.com/kubernetes-csi/csi-test/v5 version in $MODULE/go.mod"
DIGEST=$(cat "$MODULE/go.mod" "$MODULE/go.sum" "$MODULE/controller/main.go" | sha256sum | cut -c1-12)
CACHE=${APIARY_CSI_CACHE:-${HOME:-/root}/.cache/apiary/csi}/$VERSION-$DIGEST
BIN=$CACHE/bin

go_bin() {
    command -v go 2>/dev/null || { [ -x /usr/local/go/bin/go ] && echo /usr/local/go/bin/go; } || true
}

have_binaries() { [ -x "$BIN/csi-sanity" ] && [ -x "$BIN/controller" ]; }

build() {
    have_binaries && return 0
    mkdir -p "$CACHE"
    # Parallel tests may ask at once: one builds, the others wait and find it built.
    exec 8>"$CACHE/.lock"
    flock 8
    if ! have_binaries; then
        go=$(go_bin)
        [ -n "$go" ] || die "go not found: Go 1.26 builds csi-sanity (tests/csi)"
        echo "==> building csi-sanity $VERSION into $BIN" >&2
        rm -rf "$CACHE/build.tmp"
        mkdir -p "$CACHE/build.tmp"
        (cd "$MODULE" && "$go" build -trimpath -ldflags=-s -o "$CACHE/build.tmp/" \
            github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity ./controller)
        rm -rf "$BIN"
        mv "$CACHE/build.tmp" "$BIN"
    fi
    exec 8>&-
}

case ${1:-} in
    build) build ;;
    path) build; echo "$BIN" ;;
    *) die "usage: csi-sanity.sh build|path" ;;
esac
