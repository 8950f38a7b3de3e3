#!/usr/bin/env bash
# Reliability checks (fuzzing, soak, Python under sanitizers, Autobahn), short bounded variants (long variants and figures: tests/RELIABILITY.md):
#   fuzz      cargo-fuzz, each target for FUZZ_SECONDS (default 15) from its committed seeds
#   soak      500 cut/resume cycles through the C API (RSS, fds, threads)
#   python    the Python binding's pytest suite under ASan, then under valgrind
#   autobahn  RFC 6455 client cases (kosoku, compression groups excluded)
# Usage: scripts/reliability.sh [fuzz|soak|python|autobahn ...]   (default: all)
# Installs what it needs: cargo-fuzz into target/tools (nightly features via RUSTC_BOOTSTRAP
# on the stable toolchain), kosoku into target/autobahn/venv.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
parts=("$@")
[[ ${#parts[@]} -eq 0 ]] && parts=(fuzz soak python autobahn)
secs="${FUZZ_SECONDS:-15}"

fuzz() {
    local tools="$root/target/tools/cargo-fuzz"
    if [[ ! -x $tools/bin/cargo-fuzz ]]; then
        cargo install --quiet --locked --root "$tools" cargo-fuzz@0.13.2
    fi
    export RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$root/target/fuzz"
    cd "$root/fuzz"
    "$tools/bin/cargo-fuzz" build -O
    for t in inflate_diff line_splitter envelope rwws_packet ffi_sequence store; do
        # Seeds stay in the committed corpus directory; new inputs go to a scratch one.
        local scratch="$root/target/fuzz/corpus/$t"
        mkdir -p "$scratch"
        echo "== fuzz $t (${secs}s)"
        local log="$root/target/fuzz/$t.log" rc=0
        "$tools/bin/cargo-fuzz" run -O "$t" "$scratch" "corpus/$t" -- \
            -max_total_time="$secs" -rss_limit_mb=3072 -print_final_stats=1 >"$log" 2>&1 || rc=$?
        grep -E "^(stat::number_of_executed_units|Done)" "$log" || true
        # The assertion's message comes well before libFuzzer's report of the input.
        if [[ $rc -ne 0 ]]; then grep -m1 -A3 "panicked at" "$log" || true; tail -40 "$log"; echo "fuzz $t: crash (fuzz/artifacts/$t)" >&2; exit 1; fi
    done
    cd "$root"
}

for p in "${parts[@]}"; do
    case $p in
        fuzz) fuzz ;;
        soak) tests/soak/run.sh 500 ;;
        python)
            tests/sanitizers/python.sh all ;;
        autobahn) tests/autobahn/run.sh ;;
        *) echo "unknown part $p" >&2; exit 2 ;;
    esac
done
