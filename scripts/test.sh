#!/bin/sh
# The whole test suite: installs what it needs (apt packages, bpffs/tracefs mounts), builds the
# BPF fixtures with clang (tests/fixtures/build.rs), and runs every crate's tests. Privileged
# tests need root; with APIARY_REQUIRE_PRIVILEGED=1 (set by .ci/run) they fail instead of skip.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages
ensure_mounts
# bpffs directories of test processes that were killed before their clean-up (named
# apiary-test-PIDxN): their pins keep programs in the kernel; the test process is gone.
for d in /sys/fs/bpf/apiary-test-*; do
    [ -d "$d" ] || continue
    pid=${d#/sys/fs/bpf/apiary-test-}
    pid=${pid%%x*}
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
        as_root rm -rf "$d"
    fi
done
ensure_cargo
ensure_clients
sh scripts/web-tests.sh >/dev/null  # chromium and playwright-core for tests/web.rs
sh scripts/otlp.sh >/dev/null  # opentelemetry-proto for the OTLP receiver of tests/metrics.rs
ensure_kube_testenv
sh scripts/csi-sanity.sh build  # csi-sanity for crates/apiary-cli/tests/csi.rs (cached; builds when missing)

# The Kubernetes tests' control plane, in a state directory of this run's own (never a developer's
# running one), stopped on any exit so that nothing is left running; tests/kube/smoke.sh proves it
# works (nodes, RBAC) before the tests use it through KUBECONFIG and APIARY_KUBECTL.
APIARY_KUBE_DIR=/tmp/apiary-kube-test.$$
export APIARY_KUBE_DIR
trap 'sh scripts/kube-testenv.sh down --dir "$APIARY_KUBE_DIR"; rm -f "$APIARY_KUBE_DIR.lock"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
sh scripts/kube-testenv.sh up --dir "$APIARY_KUBE_DIR"
eval "$(sh scripts/kube-testenv.sh env --dir "$APIARY_KUBE_DIR")"
sh tests/kube/smoke.sh

# The whole workspace in-process, then the CLI suites again through a daemon (each test's apiary
# instance gets its own `apiary serve` on a unix socket), so both front doors are tested.
DAEMON_SUITES="--test programs --test lifecycle --test errors --test chains --test update --test network --test real_world --test apply"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast --test-threads "${APIARY_TEST_THREADS:-4}"
    APIARY_TEST_ENDPOINT_MODE=daemon cargo nextest run -p apiary-cli $DAEMON_SUITES --no-fail-fast --test-threads "${APIARY_TEST_THREADS:-4}"
else
    cargo test --workspace --no-fail-fast -- --test-threads "${APIARY_TEST_THREADS:-4}"
    APIARY_TEST_ENDPOINT_MODE=daemon cargo test -p apiary-cli $DAEMON_SUITES --no-fail-fast -- --test-threads "${APIARY_TEST_THREADS:-4}"
fi
APIARY_FUZZ_PROFILE=dev bench/fuzz.sh "${APIARY_FUZZ_SECONDS:-3}"  # each fuzz target briefly; a finding fails the suite
