#!/usr/bin/env bash
# Builds and tests the Swift binding with a real Swift toolchain:
#  1. builds libtether (release) and tether-backend (debug) with cargo on the host, and the
#     libgomuksffi double of the in-process tests (tests/inproc/build.sh, passed to the tests
#     as TETHER_FAKE_GOMUKS);
#  2. makes sure the Debian trixie root with Swift 6 exists (swift-root.sh; cached outside the
#     clone, built once per machine);
#  3. bind-mounts the clone into that root at the same path and mounts /proc, then inside it:
#     `swift build` and `swift test` of the root Package.swift (Swift 6 language mode, warnings
#     are errors), and builds examples/swift/PingAckResume and runs it against a backend that
#     cuts the connection every 40 events;
#  4. undoes every mount on the way out, also on failure or Ctrl-C.
# Prints `swift: N passed, M failed` last. Needs root (chroot, mount); skipped without it,
# except with CI=true, where not running is a failure. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SELF=$ROOT/bindings/swift/run-tests.sh

if [[ $(id -u) -ne 0 ]]; then
  if [[ ${CI:-} == true ]]; then
    echo "swift: needs root (chroot and mounts), and CI=true does not allow skipping" >&2
    exit 1
  fi
  echo "swift: skipped (needs root for the Swift chroot; run as root or with sudo)"
  exit 0
fi

# A private mount namespace: the mounts below are invisible to the rest of the machine and
# vanish with the last process in it, even if this script is killed with SIGKILL. The trap
# below still unmounts them, which is all there is where unshare is not permitted.
if [[ -z ${TETHER_SWIFT_NAMESPACE:-} ]] && unshare --mount --propagation private true 2>/dev/null; then
  export TETHER_SWIFT_NAMESPACE=1
  exec unshare --mount --propagation private "$SELF" "$@"
fi

SWIFT_ROOT=
MOUNTS=()
source scripts/backend.sh
PROXY_PID=
WORK=$(mktemp -d)
cleanup() {
  local rc=$? i
  if [[ -n $PROXY_PID ]]; then
    kill "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
  fi
  stop_backend
  # Innermost first; lazy as a last resort so a straggling process cannot keep a mount alive.
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}" 2>/dev/null ||
      echo "swift: could not unmount ${MOUNTS[i]}" >&2
  done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

echo "== swift: cargo build --release -p tether --lib; cargo build -p tether-testkit --bin tether-backend; tests/inproc/build.sh"
cargo build --quiet --release -p tether --lib
cargo build --quiet -p tether-testkit --bin tether-backend
TARGET=$(cargo metadata --format-version 1 --no-deps |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
LIBDIR=$TARGET/release
BACKEND=$TARGET/debug/tether-backend
# The libgomuksffi double of the in-process tests (tests/inproc; well under a second), under
# the target directory, which the root sees (bound below).
FAKE_GOMUKS_DIR=$TARGET/fake-gomuksffi
"$ROOT/tests/inproc/build.sh" "$FAKE_GOMUKS_DIR" >/dev/null
FAKE_GOMUKS=$FAKE_GOMUKS_DIR/libfakegomuksffi.so

echo "== swift: toolchain root"
root_dir=${TETHER_SWIFT_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/tether/swift-root}
if [[ ! -f $root_dir/.tether-swift-root ]] && ! command -v debootstrap >/dev/null &&
  ! command -v apt-get >/dev/null; then
  if [[ ${CI:-} == true ]]; then
    echo "swift: no Swift root at $root_dir and no apt-get/debootstrap to build one" >&2
    exit 1
  fi
  echo "swift: skipped (the Swift root is built with debootstrap, and this host has no apt-get)"
  exit 0
fi
SWIFT_ROOT=$("$ROOT/bindings/swift/swift-root.sh")

# The same paths inside the root as outside, so paths in errors, #filePath and the build's
# rpath mean the same on both sides.
bind() {
  mkdir -p "$SWIFT_ROOT$1"
  mount --bind "$1" "$SWIFT_ROOT$1"
  MOUNTS+=("$SWIFT_ROOT$1")
}
mount -t proc proc "$SWIFT_ROOT/proc"
MOUNTS+=("$SWIFT_ROOT/proc")
bind "$ROOT"
case $TARGET/ in "$ROOT"/*) ;; *) bind "$TARGET" ;; esac

# tinyproxy with Basic proxy auth on the host's loopback, which the root shares, for the proxy
# test (TETHER_TEST_PROXY); without tinyproxy that test skips, except under CI=true.
TEST_PROXY=
TINYPROXY=$(command -v tinyproxy || true)
if [[ -n $TINYPROXY ]]; then
  PROXY_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  printf 'Port %s\nListen 127.0.0.1\nTimeout 60\nLogLevel Connect\nLogFile "%s"\nBasicAuth puser ppass\n' \
    "$PROXY_PORT" "$WORK/tinyproxy.log" >"$WORK/tinyproxy.conf"
  "$TINYPROXY" -d -c "$WORK/tinyproxy.conf" >/dev/null 2>&1 &
  PROXY_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PROXY_PORT") 2>/dev/null && break
    sleep 0.1
  done
  TEST_PROXY=http://puser:ppass@127.0.0.1:$PROXY_PORT
fi

# Runs a command in the root, in the clone, with a clean environment.
in_root() {
  chroot "$SWIFT_ROOT" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/root \
    LANG=C.UTF-8 CI="${CI:-}" TETHER_BACKEND="$BACKEND" TETHER_FAKE_GOMUKS="$FAKE_GOMUKS" \
    LD_LIBRARY_PATH="$LIBDIR" \
    ${TEST_PROXY:+TETHER_TEST_PROXY="$TEST_PROXY"} \
    bash -c "cd '$ROOT' && $1"
}
# sed reads all of it: `head` would stop early and, under pipefail, fail on the SIGPIPE.
in_root "swift --version" | sed -n 1p

# Swift 6 language mode comes from swift-tools-version 6.0; complete strict concurrency is
# its default, restated so the intent is visible, and any warning fails the build.
FLAGS="-Xswiftc -strict-concurrency=complete -Xswiftc -warnings-as-errors"
FLAGS+=" -Xlinker -L$LIBDIR -Xlinker -rpath -Xlinker $LIBDIR"

echo "== swift: swift build (Package.swift)"
in_root "swift build --scratch-path '$TARGET/swift' $FLAGS"

echo "== swift: swift test"
rc=0
# TETHER_SWIFT_FILTER (a test name or pattern) runs only the tests it matches.
in_root "swift test --scratch-path '$TARGET/swift' $FLAGS${TETHER_SWIFT_FILTER:+ --filter '$TETHER_SWIFT_FILTER'}" 2>&1 |
  tee "$WORK/test.log" || rc=$?
# XCTest's totals: "Executed N tests, with [S test(s) skipped and ]M failures" for the
# 'All tests' suite (the last such line); skipped tests are not counted as passed.
read -r executed skipped xfailed < <(
  grep -E "Executed [0-9]+ tests?, with ([0-9]+ tests? skipped and )?[0-9]+ failures?" "$WORK/test.log" |
    tail -n1 |
    sed -E 's/.*Executed ([0-9]+) tests?, with (([0-9]+) tests? skipped and )?([0-9]+) failures?.*/\1 0\3 \4/') || true
executed=${executed:-0}
skipped=$((10#${skipped:-0}))
xfailed=${xfailed:-0}
passed=$((executed - xfailed - skipped))
failures=$xfailed
# A crash or a build failure leaves no totals, or totals without a failure: count it once.
# (A TETHER_SWIFT_FILTER that matches no test runs none, and that is no failure.)
if [[ $rc -ne 0 && $xfailed -eq 0 ]] || [[ $executed -eq 0 && -z ${TETHER_SWIFT_FILTER:-} ]]; then
  echo "swift: swift test failed (exit status $rc, $executed tests run)" >&2
  failures=$((failures + 1))
fi

echo "== swift: examples/swift/PingAckResume against a backend that cuts every 40 events and restarts once"
example=failed
# The example's run, with the backend restarting 3 s in (RESUMED reset, no gap counted).
run_example() {
  local pid
  in_root "'$TARGET/swift-example/debug/PingAckResume' http://$BACKEND_ADDR 10" >"$WORK/example.log" 2>&1 &
  pid=$!
  sleep 3
  restart_backend || { wait "$pid"; return 1; }
  wait "$pid"
}
if in_root "swift build --package-path examples/swift/PingAckResume --scratch-path '$TARGET/swift-example' $FLAGS"; then
  if start_backend "$WORK/backend.out" "$BACKEND" --event-rate 20 --cut-after-events 40 && run_example &&
    grep -q "replayed" "$WORK/example.log" && grep -q "^pong:" "$WORK/example.log" &&
    grep -q "RESUMED reset" "$WORK/example.log" && grep -q "^closed" "$WORK/example.log"; then
    example=passed
  fi
  if [[ -f $WORK/example.log ]]; then sed 's/^/  example: /' "$WORK/example.log" | tail -n 12; fi
fi
echo "swift: example $example"

if [[ $example == passed ]]; then passed=$((passed + 1)); else failures=$((failures + 1)); fi
if [[ $skipped -gt 0 ]]; then echo "swift: $skipped skipped (see the log above)"; fi
echo "swift: $passed passed, $failures failed"
[[ $failures -eq 0 ]]
