#!/usr/bin/env bash
# Interop suite: tether's C API against the real gomuks backend.
# Builds interop/gomuks (the pinned go.mau.fi/gomuks module, cgo sqlite, tags goolm noheic
# sqlite_fts5) with the local Go toolchain, builds the C tests under ASan+UBSan and runs
#   1. test_gomuks_interop: gomuks not logged in (auth, errors, cancel, pings, close codes);
#   2. test_gomuks_synapse: gomuks logged in to a throwaway Synapse on loopback (live events,
#      acks, a cut and the exactly-once resume). Synapse comes from PyPI into a venv under
#      target/interop; INTEROP_SYNAPSE=0 skips this part.
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
for t in test_gomuks_interop test_gomuks_synapse; do
  cc -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Wall -Wextra -Wpedantic -Werror -g -O1 \
    -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
    -I"$ROOT/include" -I"$ROOT/tests/c" -I"$ROOT/interop" "interop/$t.c" \
    -L"$LIBDIR" -ltether -Wl,-rpath,"$LIBDIR" -lpthread -o "$OUT/$t"
done

# gomuks and Synapse keep their state here; removed (Synapse stopped) however the run ends.
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/tether-interop.XXXXXX")
VENV=$OUT/synapse-venv
cleanup() {
  [[ -f $SCRATCH/synapse/pid ]] && "$VENV/bin/python" interop/synapse/hs.py stop "$SCRATCH/synapse"
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
export TETHER_BACKEND=$OUT/gomuks-interop
export ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
LOG=$OUT/run.log
: > "$LOG"

# Runs one test program against a fresh gomuks data directory; stops the run on failure.
run_test() {
  local t=$1
  export GOMUKS_ROOT=$SCRATCH/gomuks-$t GOMUKS_INTEROP_LOG=$OUT/$t.gomuks.log
  mkdir -p "$GOMUKS_ROOT"
  : > "$GOMUKS_INTEROP_LOG"
  set +e
  "$OUT/$t" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  set -e
  if [[ $rc != 0 ]]; then
    echo "--- last gomuks log lines ($GOMUKS_INTEROP_LOG)" >&2
    tail -n 30 "$GOMUKS_INTEROP_LOG" >&2
    echo "interop: $t FAILED (exit $rc)" >&2
    echo "interop: $(grep -c '^ok ' "$LOG" || true) passed, 1 failed"
    exit 1
  fi
}

run_test test_gomuks_interop
t2=$(date +%s)
echo "interop: without a homeserver: $((t2 - t1)) s"

if [[ ${INTEROP_SYNAPSE:-1} != 0 ]]; then
  if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c 'import synapse' 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "matrix-synapse==1.163.2"
  fi
  t3=$(date +%s)
  mkdir -p "$SCRATCH/synapse"
  HS_JSON=$("$VENV/bin/python" interop/synapse/hs.py start "$SCRATCH/synapse")
  field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$HS_JSON" "$1"; }
  SYNAPSE_HS=$(field hs) SYNAPSE_ROOM=$(field room) SYNAPSE_USER=$(field user)
  SYNAPSE_PASSWORD=$(field password)
  export SYNAPSE_HS SYNAPSE_ROOM SYNAPSE_USER SYNAPSE_PASSWORD
  export BOB_SEND="$VENV/bin/python $ROOT/interop/synapse/hs.py send $SCRATCH/synapse"
  t4=$(date +%s)
  echo "interop: synapse ready in $((t4 - t3)) s (venv $((t3 - t2)) s)"
  run_test test_gomuks_synapse
  echo "interop: with synapse: $(($(date +%s) - t4)) s"
else
  echo "interop: synapse part skipped (INTEROP_SYNAPSE=0)"
fi
echo "interop: $(grep -c '^ok ' "$LOG") passed, 0 failed"
