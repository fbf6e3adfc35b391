#!/bin/sh
# Coverage-guided fuzzing of apiary's parsers (targets in fuzz/fuzz_targets, see fuzz/Cargo.toml).
#
#   bench/fuzz.sh [SECONDS] [TARGET...]     default: 60 seconds for every target, one at a time
#
# Builds every target once (cached in fuzz/target; no cargo-fuzz needed), writes
# seeds made from the compiled BPF fixtures into fuzz/seeds/TARGET, replays the kept crash
# inputs in fuzz/regressions/TARGET, then fuzzes and prints per target: executions, exec/s,
# corpus size, coverage and findings. A finding (crash, timeout, out-of-memory) is saved under
# fuzz/artifacts/TARGET/ and makes the script exit non-zero after all targets ran.
#
# Environment: APIARY_FUZZ_SANITIZER (none by default: apiary's parsers are safe Rust, so ASan
# would only slow each run; `address` for the C-adjacent paths), APIARY_FUZZ_RSS_MB (2048),
# APIARY_FUZZ_PROFILE (release by default; `dev` builds unoptimised, which is what the test
# suite uses: a third of the build time, and a few seconds per target need no speed).
set -eu
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-60}"
[ $# -gt 0 ] && shift
SANITIZER="${APIARY_FUZZ_SANITIZER:-none}"
RSS_MB="${APIARY_FUZZ_RSS_MB:-2048}"
profile="${APIARY_FUZZ_PROFILE:-release}"
case "$profile" in
    release) bin_dir="fuzz/target/x86_64-unknown-linux-gnu/release" ;;
    dev) bin_dir="fuzz/target/x86_64-unknown-linux-gnu/debug" ;;
    *) echo "APIARY_FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    . "$HOME/.cargo/env"
fi
# The build cargo-fuzz 0.13 would run (`cargo fuzz build`, same RUSTFLAGS, so both share
# fuzz/target), driven directly so that nothing has to be installed: sancov instrumentation
# for libFuzzer (libfuzzer-sys builds and links it), `--cfg fuzzing`, and in release one
# codegen unit, which lets ThinLTO inline across the instrumented code. `--target` keeps build
# scripts and proc macros uninstrumented. Debug assertions and overflow checks stay on in both
# profiles (fuzz/Cargo.toml). `cargo fuzz run TARGET` works on the same crate.
rustflags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
rustflags="$rustflags -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table"
rustflags="$rustflags -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
rustflags="$rustflags -Cllvm-args=-simplifycfg-branch-fold-threshold=0 -Cllvm-args=-sanitizer-coverage-stack-depth"
[ "$SANITIZER" = none ] || rustflags="$rustflags -Zsanitizer=$SANITIZER"
if [ "$profile" = release ]; then
    rustflags="$rustflags -Ccodegen-units=1"
    cargo_profile="--release --config profile.release.debug=\"line-tables-only\""
else
    rustflags="$rustflags -Cdebug-assertions"
    cargo_profile=""
fi
echo "==> building fuzz targets ($profile, sanitizer: $SANITIZER)"
# -Zsanitizer is unstable: stable rustc takes it only when told it is bootstrapping.
bootstrap=""
[ "$SANITIZER" = none ] || bootstrap="RUSTC_BOOTSTRAP=1"
env $bootstrap RUSTFLAGS="$rustflags" cargo build --manifest-path fuzz/Cargo.toml \
    --target x86_64-unknown-linux-gnu $cargo_profile --bins

if [ $# -eq 0 ]; then
    set -- $(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx apiary-fuzz)
fi
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
    # The last status line (`#N ... cov: C ft: F corp: K/SIZE ...`); it may quote raw bytes.
    stats=$(grep -a -E '^#[0-9]+' "$log" | tail -1 | tr -cd '[:print:]\n' |
        awk '{ for (i = 1; i < NF; i++) { if ($i == "cov:") c = $(i+1); if ($i == "corp:") { split($(i+1), a, "/"); k = a[1] } } } END { print (k == "" ? "?" : k), (c == "" ? "?" : c) }')
    corp=${stats% *} cov=${stats#* }
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
