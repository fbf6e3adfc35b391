# Shared setup steps for scripts/setup.sh and scripts/test.sh. Idempotent: installs only what is
# missing and mounts only what is not mounted.

APT_PACKAGES="clang llvm libelf-dev zlib1g-dev pkg-config bpftool iproute2 iputils-ping libbpf-dev make gcc docker-registry openssl python3 systemtap-sdt-dev"
# man -l renders the generated pages in the completions test (tests/docs.rs).
APT_PACKAGES="$APT_PACKAGES man-db"
# promtool (Debian's prometheus) checks the metrics endpoints in tests/metrics.rs.
APT_PACKAGES="$APT_PACKAGES prometheus"
# `apiary trace` runs bpftrace scripts with the distribution's bpftrace (it needs kernel BTF only).
APT_PACKAGES="$APT_PACKAGES bpftrace"

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

ensure_packages() {
    missing=""
    for p in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo "==> installing:$missing"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    fi
}

ensure_mounts() {
    if ! mount | grep -q " /sys/fs/bpf type bpf"; then
        echo "==> mounting bpffs at /sys/fs/bpf"
        as_root mkdir -p /sys/fs/bpf
        as_root mount -t bpf bpf /sys/fs/bpf
    fi
    if [ ! -d /sys/kernel/tracing/events ]; then
        echo "==> mounting tracefs at /sys/kernel/tracing"
        as_root mount -t tracefs tracefs /sys/kernel/tracing
    fi
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
    fi
    command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
}

# The stock Python (grpcio) and Go (grpc-go) clients that crates/apiary-cli/tests/clients.rs runs
# against the daemon: installed and built into a cache once, by scripts/clients.sh.
ensure_clients() {
    sh scripts/clients.sh >/dev/null
}

# The real Kubernetes control plane (etcd, kube-apiserver, kubectl from the Go module in tests/kube)
# that the Kubernetes tests run against: built into a cache once by scripts/kube-testenv.sh (a cold
# build takes 3 to 8 minutes on 2 cores), started and stopped by scripts/test.sh.
ensure_kube_testenv() {
    sh scripts/kube-testenv.sh build
}

# Debian's chromium, which the web view's browser tests drive headless (scripts/web-tests.sh adds
# playwright-core from npm). Kept out of APT_PACKAGES: only the browser tests need it.
ensure_browser() {
    APT_PACKAGES="chromium" ensure_packages
    # Node's own packages (nodesource's nodejs) bring npm; Debian's nodejs does not.
    command -v npm >/dev/null 2>&1 || APT_PACKAGES="npm" ensure_packages
}
