#!/usr/bin/env bash
# Interop suite (issue 10): tether's C API against the real gomuks backend.
# Builds interop/gomuks (the pinned go.mau.fi/gomuks module, cgo sqlite, tags goolm noheic
# sqlite_fts5) with the local Go toolchain, builds the C test under ASan+UBSan and runs it.
# Skips (exit 0) when Go is absent; any other failure is fatal.
# Usage: interop/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$ROOT/target/interop
mkdir -p "$OUT"

if ! command -v go >/dev/null 2>&1; then
  echo "interop: skipped: go not found"
  exit 0
fi
# The toolchain at hand builds it (gomuks-rpc.md §13.4); never download another.
export GOTOOLCHAIN=local CGO_ENABLED=1
GO_TAGS='goolm noheic sqlite_fts5'

t0=$(date +%s)
(cd interop/gomuks && go build -tags "$GO_TAGS" -o "$OUT/gomuks-interop" .)
t1=$(date +%s)
echo "interop: gomuks-interop built in $((t1 - t0)) s ($(go version | cut -d' ' -f3), go.mau.fi/gomuks $(cd interop/gomuks && go list -m -f '{{.Version}}' go.mau.fi/gomuks))"

cargo build --quiet -p tether --lib
LIBDIR=$ROOT/target/debug
cc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Wpedantic -Werror -g -O1 \
  -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
  -I"$ROOT/include" -I"$ROOT/tests/c" -I"$ROOT/interop" interop/test_gomuks_interop.c \
  -L"$LIBDIR" -ltether -Wl,-rpath,"$LIBDIR" -lpthread -o "$OUT/test_gomuks_interop"

# gomuks keeps its config, database and logs here; removed however the test ends.
GOMUKS_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/gomuks-interop.XXXXXX")
export GOMUKS_ROOT
trap 'rm -rf "$GOMUKS_ROOT"' EXIT
export TETHER_BACKEND=$OUT/gomuks-interop
LOG=$OUT/run.log
export GOMUKS_INTEROP_LOG=$OUT/gomuks.log
: > "$GOMUKS_INTEROP_LOG"
set +e
ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  "$OUT/test_gomuks_interop" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
t2=$(date +%s)
passed=$(grep -c '^ok ' "$LOG" || true)
if [[ $rc != 0 ]]; then
  echo "--- last gomuks log lines ($GOMUKS_INTEROP_LOG)" >&2
  tail -n 30 "$GOMUKS_INTEROP_LOG" >&2
  echo "interop: FAILED (exit $rc)" >&2
  echo "interop: $passed passed, 1 failed"
  exit 1
fi
echo "interop: tests took $((t2 - t1)) s"
echo "interop: $passed passed, 0 failed"
