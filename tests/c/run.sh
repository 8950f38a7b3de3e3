#!/usr/bin/env bash
# Builds the C API tests and runs them against a real tether-backend:
#   1. with AddressSanitizer + UndefinedBehaviorSanitizer (and LeakSanitizer), checking the
#      sanitizer runtime is really linked;
#   2. without sanitizers under valgrind (memcheck, full leak check), zero errors required;
#   3. test_api also compiled and run as C++;
#   4. one program linked through pkg-config against the static library.
# Usage: tests/c/run.sh [--no-valgrind]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/target/c-tests
mkdir -p "$OUT"
VALGRIND=1
[[ "${1:-}" == "--no-valgrind" ]] && VALGRIND=0

for tool in cc c++; do
  command -v $tool >/dev/null || { echo "tests/c: $tool not found (install gcc/g++)" >&2; exit 1; }
done
if [[ $VALGRIND == 1 ]] && ! command -v valgrind >/dev/null; then
  echo "tests/c: valgrind not found; install it (apt-get install valgrind)" >&2
  exit 1
fi

cargo build --quiet -p tether --lib
cargo build --quiet -p tether-testkit --bin tether-backend
export TETHER_BACKEND=$ROOT/target/debug/tether-backend
LIBDIR=$ROOT/target/debug

TESTS=(test_api test_callbacks test_resume test_fork)
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
c++ -std=c++17 -x c++ "${WARN[@]}" -g -I"$ROOT/include" -I"$ROOT/tests/c" tests/c/test_api.c \
  -x none "${LINK[@]}" -o "$OUT/test_api.cxx"

echo "-- ASan + UBSan"
for t in "${TESTS[@]}"; do
  echo "[$t.asan]"
  ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "$OUT/$t.asan"
done

echo "-- C++"
"$OUT/test_api.cxx"

if [[ $VALGRIND == 1 ]]; then
  echo "-- valgrind"
  for t in "${TESTS[@]}"; do
    echo "[$t.plain under valgrind]"
    # "Possibly lost" is not counted: live hash tables (hashbrown keeps an interior pointer)
    # and the stacks of the runtime's still-running threads show up there at exit; a leaked
    # table or thread would be "definitely lost".
    TETHER_TEST_SLOW=1 valgrind -q --error-exitcode=99 --leak-check=full \
      --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
      --child-silent-after-fork=yes "$OUT/$t.plain"
  done
fi
echo "-- C tests passed"
