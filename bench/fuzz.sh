#!/bin/sh
# Coverage-guided fuzzing of apiary's parsers (targets in fuzz/fuzz_targets, see fuzz/Cargo.toml).
#
#   bench/fuzz.sh [SECONDS] [TARGET...]     default: 60 seconds for every target, one at a time
#
# Installs cargo-fuzz if missing, builds every target once (cached in fuzz/target), writes
# seeds made from the compiled BPF fixtures into fuzz/seeds/TARGET, replays the kept crash
# inputs in fuzz/regressions/TARGET, then fuzzes and prints per target: executions, exec/s,
# corpus size, coverage and findings. A finding (crash, timeout, out-of-memory) is saved under
# fuzz/artifacts/TARGET/ and makes the script exit non-zero after all targets ran.
#
# Environment: APIARY_FUZZ_SANITIZER (none by default: apiary's parsers are safe Rust, so ASan
# would only slow each run; `address` for the C-adjacent paths), APIARY_FUZZ_RSS_MB (2048).
set -eu
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
SECONDS_EACH="${1:-60}"
[ $# -gt 0 ] && shift
SANITIZER="${APIARY_FUZZ_SANITIZER:-none}"
RSS_MB="${APIARY_FUZZ_RSS_MB:-2048}"

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
fi
if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION\$"; then
    echo "==> installing cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

# cargo-fuzz passes -Z flags (the sanitizer, sancov options): stable rustc accepts them only
# when told it is bootstrapping. Scoped to this build; fuzz/ has its own target dir.
echo "==> building fuzz targets (sanitizer: $SANITIZER)"
RUSTC_BOOTSTRAP=1 cargo fuzz build -O -s "$SANITIZER"

if [ $# -eq 0 ]; then
    set -- $(cargo fuzz list)
fi
bin_dir="fuzz/target/x86_64-unknown-linux-gnu/release"
failed=""
printf '%-14s %12s %9s %7s %7s %s\n' target executions exec/s corpus cov findings
for t in "$@"; do
    [ -x "$bin_dir/$t" ] || { echo "unknown fuzz target: $t" >&2; exit 2; }
    corpus="fuzz/corpus/$t" seeds="fuzz/seeds/$t" artifacts="fuzz/artifacts/$t"
    mkdir -p "$corpus" "$artifacts"
    rm -rf "$seeds"
    dirs="$corpus $seeds"
    [ -d "fuzz/regressions/$t" ] && dirs="$dirs fuzz/regressions/$t"
    log="fuzz/artifacts/$t.log"
    stamp="fuzz/artifacts/.$t.start"
    touch "$stamp"
    # libFuzzer writes new inputs into the first dir and reads the others; the target's init
    # writes the seeds into $seeds before the dirs are read.
    rc=0
    APIARY_FUZZ_SEED_DIR="$seeds" "$bin_dir/$t" $dirs \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb="$RSS_MB" \
        -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    status=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    corp=$(echo "$status" | sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p')
    cov=$(echo "$status" | sed -n 's/.* cov: \([0-9]*\) .*/\1/p')
    found=$(find "$artifacts" -type f -newer "$stamp" | sort)
    rm -f "$stamp"
    nfound=$(printf '%s' "$found" | grep -c . || true)
    printf '%-14s %12s %9s %7s %7s %s\n' "$t" "${execs:-?}" "${rate:-?}" "${corp:-?}" "${cov:-?}" "$nfound"
    if [ "$nfound" -gt 0 ] || [ "$rc" -ne 0 ]; then
        failed="$failed $t"
        for f in $found; do echo "    finding: $f"; done
        grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|panicked at)' "$log" | head -5 | sed 's/^/    /'
        echo "    log: $log (exit $rc)"
    fi
done
if [ -n "$failed" ]; then
    echo "fuzzing found problems in:$failed" >&2
    exit 1
fi
