#!/usr/bin/env bash
# Builds the C API tests and runs them against a real tether-backend (test_inproc against the
# libgomuksffi double tests/inproc/build.sh makes, passed in TETHER_FAKE_GOMUKSFFI):
#   1. with AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer), checking the
#      sanitizer runtime is really linked;
#   2. without sanitizers under valgrind (memcheck, full leak check), zero errors required;
#   3. test_api and test_misuse also compiled and run as C++;
#   4. scripts/install.sh into a scratch prefix (the shipped `dist` build): SONAME, links
#      and stripping checked, then examples/c/ping_ack_resume.c built through pkg-config and
#      through the CMake package (shared and static each) and run against a backend that cuts
#      every connection after 40 events.
# Usage: tests/c/run.sh [--no-valgrind]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/target/c-tests
mkdir -p "$OUT"
VALGRIND=1
LOG=$OUT/run.log
: > "$LOG"
# Runs a test program, keeping its "ok" lines for the closing count.
run() { "$@" 2>&1 | tee -a "$LOG"; }
[[ "${1:-}" == "--no-valgrind" ]] && VALGRIND=0

scripts/ensure-tools.sh

cargo build --quiet -p tether --lib
cargo build --quiet -p tether-testkit --bin tether-backend
export TETHER_BACKEND=$ROOT/target/debug/tether-backend
LIBDIR=$ROOT/target/debug
# The libgomuksffi test double, for test_inproc and the in-process run of the example.
tests/inproc/build.sh "$OUT/fake-ffi"
export TETHER_FAKE_GOMUKSFFI=$OUT/fake-ffi/libfakegomuksffi.so

TESTS=(test_api test_misuse test_callbacks test_resume test_fork test_rwws test_close_race test_observe test_events test_inproc test_store)
# Also compiled and run as C++ (the header must work there too).
CXX_TESTS=(test_api test_misuse)
WARN=(-Wall -Wextra -Wpedantic -Werror)
CFLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE "${WARN[@]}" -g -I"$ROOT/include" -I"$ROOT/tests/c")
LINK=(-L"$LIBDIR" -ltether -Wl,-rpath,"$LIBDIR" -lpthread)
SAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)

echo "-- compiling"
for t in "${TESTS[@]}"; do
  cc "${CFLAGS[@]}" -O1 "${SAN[@]}" "tests/c/$t.c" "${LINK[@]}" -o "$OUT/$t.asan"
  # As rustls-ffi does: prove the sanitizers are really in the binary.
  syms=$(nm "$OUT/$t.asan")
  grep -q __asan_init <<<"$syms" || { echo "$t.asan: ASan not linked" >&2; exit 1; }
  grep -q __ubsan_handle <<<"$syms" || { echo "$t.asan: UBSan not linked" >&2; exit 1; }
  cc "${CFLAGS[@]}" -O0 "tests/c/$t.c" "${LINK[@]}" -o "$OUT/$t.plain"
done
for t in "${CXX_TESTS[@]}"; do
  c++ -std=c++17 -x c++ "${WARN[@]}" -g -I"$ROOT/include" -I"$ROOT/tests/c" "tests/c/$t.c" \
    -x none "${LINK[@]}" -o "$OUT/$t.cxx"
done

echo "-- ASan + UBSan"
for t in "${TESTS[@]}"; do
  echo "[$t.asan]"
  ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    run "$OUT/$t.asan"
done

echo "-- C++"
for t in "${CXX_TESTS[@]}"; do
  echo "[$t.cxx]"
  run "$OUT/$t.cxx"
done

echo "-- installed library, example through pkg-config and CMake"
# Output is captured before it is searched: under pipefail, `ldd X | grep -q` fails whenever
# grep stops reading before ldd has written its last line (SIGPIPE), which a busy machine hits.
has() { grep -q -- "$2" <<<"$1"; }
t0=$SECONDS
rm -rf "$OUT/prefix"
scripts/install.sh "$OUT/prefix"
echo "   (install: $((SECONDS - t0)) s)"
P=$OUT/prefix/lib
# Before 1.0 the SONAME names MAJOR.MINOR (a minor release may change the ABI), then MAJOR.
V=$(sed -n 's/^#define TETHER_VERSION_STRING "\(.*\)"/\1/p' include/tether.h)
SONAME=libtether.so.${V%%.*}
[[ ${V%%.*} == 0 ]] && SONAME=libtether.so.${V%.*}
[[ $(readlink "$P/libtether.so") == "$SONAME" ]] || { echo "libtether.so does not link to $SONAME" >&2; exit 1; }
[[ $(readlink "$P/$SONAME") == "libtether.so.$V" ]] || { echo "$SONAME does not link to libtether.so.$V" >&2; exit 1; }
has "$(readelf -d "$P/libtether.so")" "SONAME.*\\[$SONAME\\]" || { echo "installed library lacks SONAME $SONAME" >&2; exit 1; }
if has "$(readelf -S "$P/libtether.so")" '\.debug_'; then echo "installed library keeps debug info" >&2; exit 1; fi
echo "   installed $(readlink -f "$P/libtether.so" | xargs basename): $(stat -L -c %s "$P/libtether.so") bytes"
export PKG_CONFIG_PATH=$P/pkgconfig
EX=examples/c/ping_ack_resume.c
# shellcheck disable=SC2046
cc "${CFLAGS[@]}" "$EX" $(pkg-config --cflags --libs tether) -Wl,-rpath,"$OUT/prefix/lib" -o "$OUT/example.shared"
# shellcheck disable=SC2046
cc "${CFLAGS[@]}" "$EX" $(pkg-config --cflags --libs tether-static) -o "$OUT/example.static"
if has "$(ldd "$OUT/example.static")" libtether; then echo "example.static links libtether.so" >&2; exit 1; fi
has "$(readelf -d "$OUT/example.shared")" "NEEDED.*\\[$SONAME\\]" || { echo "example.shared does not need $SONAME" >&2; exit 1; }
rm -rf "$OUT/cmake-build"
cmake -S tests/c/cmake -B "$OUT/cmake-build" -DCMAKE_PREFIX_PATH="$OUT/prefix" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="-Wall -Wextra -Werror" >"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
cmake --build "$OUT/cmake-build" >>"$OUT/cmake.log" 2>&1 || { cat "$OUT/cmake.log"; exit 1; }
cp "$OUT/cmake-build/example_shared" "$OUT/example.cmake-shared"
cp "$OUT/cmake-build/example_static" "$OUT/example.cmake-static"
if has "$(ldd "$OUT/example.cmake-static")" libtether; then echo "example.cmake-static links libtether.so" >&2; exit 1; fi
LOADED=$(ldd "$OUT/example.cmake-shared")
has "$LOADED" "$SONAME => $P/" || { echo "$LOADED"; echo "example.cmake-shared does not load the installed $SONAME" >&2; exit 1; }
source scripts/backend.sh
trap stop_backend EXIT
start_backend "$OUT/backend.out" "$TETHER_BACKEND" --event-rate 30 --cut-after-events 40
ADDR=$BACKEND_ADDR
for ex in example.static example.shared example.cmake-static example.cmake-shared; do
  if [[ $ex == example.shared ]]; then
    # This one also lives through a backend restart: RESUMED RESET, and no gap counted.
    "$OUT/$ex" "http://$ADDR" 6 > "$OUT/$ex.log" &
    sleep 2.5
    restart_backend
    wait $! || { cat "$OUT/$ex.log"; echo "$ex failed" >&2; exit 1; }
    grep -q "RESUMED RESET" "$OUT/$ex.log" || { cat "$OUT/$ex.log"; echo "$ex: no reset seen" >&2; exit 1; }
  else
    "$OUT/$ex" "http://$ADDR" 6 > "$OUT/$ex.log" || { cat "$OUT/$ex.log"; echo "$ex failed" >&2; exit 1; }
  fi
  grep -q "replayed" "$OUT/$ex.log" || { cat "$OUT/$ex.log"; echo "$ex: no resume seen" >&2; exit 1; }
  grep -q "^pong: .*acknowledged event -" "$OUT/$ex.log" || { cat "$OUT/$ex.log"; echo "$ex: no ack" >&2; exit 1; }
  echo "ok $ex: $(tail -1 "$OUT/$ex.log")" | tee -a "$LOG"
done
stop_backend
trap - EXIT
# The same example through the in-process transport, against the libgomuksffi test double.
INPROC_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/tether-c-inproc.XXXXXX")
"$OUT/example.shared" --in-process "$TETHER_FAKE_GOMUKSFFI" "$INPROC_ROOT" 3 > "$OUT/example.inproc.log"
rm -rf "$INPROC_ROOT"
grep -q "^event sync_status" "$OUT/example.inproc.log" || { cat "$OUT/example.inproc.log"; echo "in-process example: no startup events" >&2; exit 1; }
echo "ok example.shared --in-process: $(tail -1 "$OUT/example.inproc.log")" | tee -a "$LOG"

if [[ $VALGRIND == 1 ]]; then
  echo "-- valgrind"
  for t in "${TESTS[@]}"; do
    echo "[$t.plain under valgrind]"
    # "Possibly lost" is not counted: live hash tables (hashbrown keeps an interior pointer)
    # and the stacks of the runtime's still-running threads show up there at exit; a leaked
    # table or thread would be "definitely lost". --fair-sched: valgrind runs one thread at a
    # time, and its default lock lets spinning threads starve the rest for seconds (a closing
    # thread in test_close_race, while three requesters queued 70,000 requests).
    TETHER_TEST_SLOW=1 valgrind -q --fair-sched=yes --error-exitcode=99 --leak-check=full \
      --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
      --child-silent-after-fork=yes "$OUT/$t.plain" 2>&1 | tee -a "$LOG"
  done
fi
echo "c-tests: $(grep -c '^ok ' "$LOG") passed, 0 failed"
