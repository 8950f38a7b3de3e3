#!/usr/bin/env bash
# Runs every test of the project. Installs the system tools it needs (scripts/ensure-tools.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi
# Each stage reports how long the previous one took, so slow stages show in the CI log.
stage_start=$SECONDS
stage() {
  echo "   (took $((SECONDS - stage_start)) s; $SECONDS s in all)"
  stage_start=$SECONDS
  echo "== $*"
}
stage "system tools (scripts/ensure-tools.sh: compilers, valgrind, JDK and Maven, proxies, tmux)"
# First: the Rust tests already start the proxy servers (and fail under CI=true without them).
scripts/ensure-tools.sh
stage "format, lint, the C header and the crate package"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The crate as published (src/, include/, README) builds on its own; the testkit, a path-only
# dev-dependency, is stripped from it. --allow-dirty: what matters is that it builds, also from
# a tree with uncommitted changes. Its verify build shares target/debug with the workspace's
# tether under the same file names, so it runs before the next build of the library (the
# header check's) rather than between two that could share one.
cargo package -q -p tether --allow-dirty
# include/tether.h and src/ffi/consts.rs match the sources, and the header declares every export.
cargo xtask header --check
# Every C call of the Swift and Kotlin bindings exists in the header with its arity (a quick
# check before their own stages build and test them).
python3 scripts/check-bindings.py
stage "Rust tests"
cargo test --workspace
stage "C API tests (ASan+UBSan, valgrind, C++, install.sh, example via pkg-config and CMake)"
tests/c/run.sh
stage "Python binding (manylinux wheel and sdist, pytest against tether-backend, examples from a fresh venv)"
bindings/python/run-tests.sh
stage "Interop with the real gomuks backend (skipped without Go) and a throwaway Synapse"
interop/run.sh
stage "Reliability: fuzzing, soak, Python under ASan, Autobahn (short variants)"
scripts/reliability.sh
stage "Benchmark harness smoke run (tiny sizes, no thresholds; figures: bench/run.sh)"
bench/run.sh --smoke
stage "Kotlin binding (JUnit against tether-backend)"
bindings/kotlin/run-tests.sh
stage "Swift binding (Swift 6 in a cached Debian trixie chroot: swift build, swift test, example against a cutting backend)"
bindings/swift/run-tests.sh
stage "done"
