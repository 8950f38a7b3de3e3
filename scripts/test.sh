#!/usr/bin/env bash
# Runs every test of the project. Installs the system tools it needs (scripts/ensure-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
# build.rs fails instead of rewriting include/tether.h when the checked-in header is stale.
export TETHER_HEADER_CHECK=1
# Each stage reports how long the previous one took, so slow stages show in the CI log.
stage_start=$SECONDS
stage() {
  echo "   (took $((SECONDS - stage_start)) s; $SECONDS s in all)"
  stage_start=$SECONDS
  echo "== $*"
}
stage "format, lint and the C header"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# No Swift toolchain in CI: check the Swift (and Kotlin) calls against the header instead.
python3 scripts/check-bindings.py
stage "Rust tests"
cargo test --workspace
stage "C API tests (ASan+UBSan, valgrind, C++, pkg-config, example)"
tests/c/run.sh
stage "Python binding (pip install into a venv, pytest against tether-backend, examples)"
bindings/python/run-tests.sh
stage "Interop with the real gomuks backend (skipped without Go) and a throwaway Synapse"
interop/run.sh
stage "Reliability: fuzzing, soak, Python under ASan, Autobahn (short variants)"
scripts/reliability.sh
stage "Benchmark harness smoke run (tiny sizes, no thresholds; figures: bench/run.sh)"
bench/run.sh --smoke
stage "Kotlin binding (JUnit against tether-backend)"
scripts/ensure-tools.sh
bindings/kotlin/run-tests.sh
stage "Swift binding (Swift 6 in a cached Debian trixie chroot: swift build, swift test, example against a cutting backend)"
bindings/swift/run-tests.sh
stage "done"
