#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) and prints, per target, the executions,
# the coverage reached, the peak memory and whether anything was found.
#
#   fuzz/run.sh 600            # ten minutes per target
#   JOBS=2 fuzz/run.sh 600     # two libFuzzer processes per target (one per core)
#   TARGETS=decode fuzz/run.sh 30
#
# Needs `cargo install cargo-fuzz`. cargo-fuzz passes `-Z` flags (sanitizers, coverage), so it needs
# a nightly toolchain; without one, the stable compiler is told to accept them with
# RUSTC_BOOTSTRAP=1 (the address sanitizer's runtime ships with stable's x86_64 Linux std).
#
# Findings: a crash, leak (LeakSanitizer is on) or timeout (over 10 s for one input) stops that
# target and leaves the input in fuzz/artifacts/TARGET/; replay it with
#   cargo +nightly fuzz run -a TARGET fuzz/artifacts/TARGET/crash-...
# and minimise it with `cargo +nightly fuzz tmin -a TARGET FILE`. The corpus grows in
# fuzz/corpus/TARGET/ between runs. Exit status: 0 when every target ran clean, 1 otherwise.
set -euo pipefail

seconds=${1:-60}
jobs=${JOBS:-1}
targets=${TARGETS:-"decode broker_core journal"}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 2
fi
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
else
    echo "fuzz/run.sh: no nightly toolchain; using stable with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

# The fuzz build (sanitizer flags) gets a target directory of its own, so that it never invalidates
# the main workspace's: FUZZ_TARGET_DIR, default fuzz/target. CARGO_TARGET_DIR is ignored here.
unset CARGO_TARGET_DIR
target_dir=${FUZZ_TARGET_DIR:-$here/target}

# -a: debug assertions (overflow checks included) on top of the release build. SANITIZER (default
# address, which brings LeakSanitizer) is cargo-fuzz's -s: `none` builds faster (CI's short run).
sanitizer=(-s "${SANITIZER:-address}")
cargo "${toolchain[@]}" fuzz build -a "${sanitizer[@]}" --target-dir "$target_dir"

parallel=()
if [ "$jobs" -gt 1 ]; then
    parallel=(-jobs="$jobs" -workers="$jobs")
fi

status=0
mkdir -p logs
for target in $targets; do
    mkdir -p "corpus/$target" "artifacts/$target"
    log="logs/$target.log"
    rm -f "$log" fuzz-*.log
    started=$(date +%s)
    set +e
    cargo "${toolchain[@]}" fuzz run -a "${sanitizer[@]}" --target-dir "$target_dir" "$target" "corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=4096 \
        -print_final_stats=1 "${parallel[@]}" >"$log" 2>&1
    code=$?
    set -e
    # With -jobs, each worker logs to fuzz-N.log; gather them.
    if compgen -G "fuzz-*.log" >/dev/null; then
        cat fuzz-*.log >>"$log"
        rm -f fuzz-*.log
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | awk '{s += $2} END {print s + 0}')
    rss=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | awk '{if ($2 > m) m = $2} END {print m + 0}')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
    found=$(grep -E -m1 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|panicked at|SUMMARY:' "$log" || true)
    echo "$target: ${runs} executions in $(($(date +%s) - started)) s, coverage ${cov:-?}, peak RSS ${rss} MB, corpus $(ls "corpus/$target" | wc -l) inputs"
    if [ "$code" -ne 0 ] || [ -n "$found" ]; then
        status=1
        echo "$target: FOUND: ${found:-libFuzzer exited with $code} (log: fuzz/$log)"
        ls -1 "artifacts/$target" | sed "s|^|  fuzz/artifacts/$target/|"
    else
        echo "$target: no crash, leak or timeout"
    fi
done
exit $status
