#!/usr/bin/env bash
# Interop suite: tether's C API against the real gomuks backend.
# Builds interop/gomuks (the pinned go.mau.fi/gomuks module, cgo sqlite, tags goolm noheic
# sqlite_fts5) and, from the same module, its C FFI libgomuksffi.so (pkg/ffi) with the local Go
# toolchain, builds the C tests under ASan+UBSan and runs
#   1. test_gomuks_interop: gomuks not logged in, over the websocket (auth, errors, cancel,
#      pings, close codes);
#   2. test_gomuks_inproc: the same backend in-process through libgomuksffi, not logged in
#      (start events, errors, cancel/timeout of a blocked call, IN_USE, close and restart,
#      callback mode, what does not apply in-process);
#   3. test_gomuks_synapse: gomuks logged in to a throwaway Synapse on loopback (live events,
#      acks, a cut and the exactly-once resume);
#   4. test_gomuks_inproc_synapse: in-process, logged in to the same Synapse (login, first
#      sync, live events, send, media upload with progress, restart logged in);
#   5. test_store_synapse: tether's native store (tether_store_*) on the websocket, logged in
#      to the same Synapse (room list order, local echo, pagination, mark_read, state and
#      typing, a cut and resume against a fresh store, a backend restart);
#   6. test_gomuks_inproc_store_synapse: the store on an in-process client.
# Synapse comes from PyPI into a venv under target/interop; INTEROP_SYNAPSE=0 skips 3 to 6.
# TETHER_RECORD_FIXTURES=DIR has test_store_synapse write the real backend's payloads there
# (recorded_v0.2607_<name>.json; tests/fixtures/gomuks holds the recorded ones).
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
# The in-process backend: the same pinned module's pkg/ffi as a shared library (§12). go build
# relinks a c-shared library every time (~25 s of CPU even with every package cached), so it
# is rebuilt only when what it is made from changed: go.mod/go.sum (the pinned module itself
# is read-only in the module cache), the Go toolchain, the C compiler settings and the tags.
# INTEROP_REBUILD_FFI=1 forces a build.
FFI_STAMP=$( (cat interop/gomuks/go.mod interop/gomuks/go.sum; go version; echo "$GO_TAGS"
  go env CC CGO_CFLAGS CGO_LDFLAGS GOFLAGS) | sha256sum | cut -d' ' -f1)
if [[ ${INTEROP_REBUILD_FFI:-0} == 0 && -f $OUT/libgomuksffi.so &&
      $(cat "$OUT/libgomuksffi.stamp" 2>/dev/null) == "$FFI_STAMP" ]]; then
  t1b=$(date +%s)
  echo "interop: libgomuksffi.so up to date ($(du -m "$OUT/libgomuksffi.so" | cut -f1) MB, same go.mod/go.sum, Go, C compiler and tags)"
else
  rm -f "$OUT/libgomuksffi.stamp"
  (cd interop/gomuks && go build -buildmode=c-shared -tags "$GO_TAGS" -o "$OUT/libgomuksffi.so" go.mau.fi/gomuks/pkg/ffi)
  echo "$FFI_STAMP" > "$OUT/libgomuksffi.stamp"
  t1b=$(date +%s)
  echo "interop: libgomuksffi.so built in $((t1b - t1)) s ($(du -m "$OUT/libgomuksffi.so" | cut -f1) MB)"
fi
# Go allocations that live as long as the process: one C string per command name in pkg/ffi
# (commandNames, from jsoncmd.AllNames); see interop/lsan-gomuksffi.supp.
GOMUKS_DIR=$(cd interop/gomuks && go list -m -f '{{.Dir}}' go.mau.fi/gomuks)
GO_CMD_NAMES=$(awk '/^var AllNames = \[\]Name\{/ {f = 1; next} f && /^\}/ {exit}
  f && /^[[:space:]]*[A-Z]/ {n++} END {print n + 0}' "$GOMUKS_DIR/pkg/hicli/jsoncmd/commands.go")
if [[ $GO_CMD_NAMES == 0 ]]; then
  echo "interop: cannot count jsoncmd.AllNames in $GOMUKS_DIR" >&2
  exit 1
fi

cargo build --quiet -p tether --lib
LIBDIR=$ROOT/target/debug
for t in test_gomuks_interop test_gomuks_synapse test_gomuks_inproc test_gomuks_inproc_synapse \
         test_store_synapse test_gomuks_inproc_store_synapse; do
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
export TETHER_BACKEND=$OUT/gomuks-interop TETHER_GOMUKS_FFI=$OUT/libgomuksffi.so
export ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
LOG=$OUT/run.log
: > "$LOG"

# Runs one test program against a fresh gomuks data directory; stops the run on failure.
# In-process programs (test_gomuks_inproc*) run with Go's own allocations suppressed for
# LeakSanitizer (interop/lsan-gomuksffi.supp), and at most the ones pkg/ffi keeps for the
# process (one per command name) may have been suppressed: an FFI buffer tether did not free
# would add to them. Fewer is no leak: a name whose string a register or stack slot still
# points to at exit counts as reachable (seen once: 67 of 68).
run_test() {
  local t=$1
  export GOMUKS_ROOT=$SCRATCH/gomuks-$t GOMUKS_INTEROP_LOG=$OUT/$t.gomuks.log
  mkdir -p "$GOMUKS_ROOT"
  : > "$GOMUKS_INTEROP_LOG"
  local lsan=${LSAN_OPTIONS:-}
  [[ $t == test_gomuks_inproc* ]] && lsan=suppressions=$ROOT/interop/lsan-gomuksffi.supp:print_suppressions=1
  set +e
  LSAN_OPTIONS=$lsan "$OUT/$t" 2>&1 | tee "$OUT/$t.out"
  local rc=${PIPESTATUS[0]}
  set -e
  cat "$OUT/$t.out" >> "$LOG"
  if [[ $rc == 0 && $t == test_gomuks_inproc* ]]; then
    local go_allocs
    go_allocs=$(awk '$3 == "_Cfunc__Cmalloc" {n += $1} END {print n + 0}' "$OUT/$t.out")
    if (( go_allocs > GO_CMD_NAMES )); then
      echo "interop: $t: $go_allocs Go allocations left at exit, at most $GO_CMD_NAMES expected (one per command name): an FFI buffer was not freed?" >&2
      rc=1
    fi
  fi
  if [[ $rc != 0 ]]; then
    echo "--- last gomuks log lines ($GOMUKS_INTEROP_LOG)" >&2
    tail -n 30 "$GOMUKS_INTEROP_LOG" >&2
    echo "interop: $t FAILED (exit $rc)" >&2
    echo "interop: $(grep -c '^ok ' "$LOG" || true) passed, 1 failed"
    exit 1
  fi
}

run_test test_gomuks_interop
t2a=$(date +%s)
echo "interop: without a homeserver, websocket: $((t2a - t1b)) s"
run_test test_gomuks_inproc
t2=$(date +%s)
echo "interop: without a homeserver, in-process: $((t2 - t2a)) s"

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
  # hs.py's other commands for bob (room, send-to, typing): "$BOB_HS CMD $SYNAPSE_DIR ARGS".
  export BOB_HS="$VENV/bin/python $ROOT/interop/synapse/hs.py" SYNAPSE_DIR=$SCRATCH/synapse
  t4=$(date +%s)
  echo "interop: synapse ready in $((t4 - t3)) s (venv $((t3 - t2)) s)"
  # Runs test $1 and reports its time as "$2".
  timed_test() {
    local t0
    t0=$(date +%s)
    run_test "$1"
    echo "interop: $2: $(($(date +%s) - t0)) s"
  }
  timed_test test_gomuks_synapse "with synapse, websocket"
  timed_test test_gomuks_inproc_synapse "with synapse, in-process"
  timed_test test_store_synapse "store with synapse, websocket"
  timed_test test_gomuks_inproc_store_synapse "store with synapse, in-process"
else
  echo "interop: synapse part skipped (INTEROP_SYNAPSE=0)"
fi
echo "interop: $(grep -c '^ok ' "$LOG") passed, 0 failed"
