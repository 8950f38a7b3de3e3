#!/usr/bin/env bash
# Builds the fake gomuks FFI library (tests/inproc/fake_gomuksffi.c) for tether's in-process
# transport tests.
# Usage: tests/inproc/build.sh OUTDIR [--smoke]
#   OUTDIR/libfakegomuksffi.so             plain build (-O1 -g, no sanitizers), so it loads into
#                                          sanitized and unsanitized hosts alike
#   OUTDIR/libfakegomuksffi-nodownload.so  the same without GomuksDownloadMediaPath, like the
#                                          pinned gomuks v0.2607.0
#   OUTDIR/libfakegomuksffi-go.so          the same with the symbol a Go-built library exports
#                                          (_cgo_panic), so it is taken for one with a Go runtime
#   OUTDIR/libnotgomuks-go.so              that symbol alone: a Go-built library that is not a
#                                          gomuks FFI
# When the pinned upstream header is found ($GOMUKSFFI_H, else the Go module cache) the double is
# also compiled once against it (syntax only), so a drift in types or prototypes fails the build.
# --smoke: also builds tests/inproc/smoke.c and runs it twice:
#   1. ASan + UBSan (+ LeakSanitizer), the double rebuilt with them too (OUTDIR/smoke-asan);
#   2. plain, against OUTDIR/libfakegomuksffi.so, under valgrind memcheck with a full leak check.
# CC overrides the compiler (default cc).
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [--smoke]" >&2; exit 2; }
OUT="" SMOKE=0
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE=1 ;;
    -*) usage ;;
    *) [[ -z "$OUT" ]] || usage; OUT=$arg ;;
  esac
done
[[ -n "$OUT" ]] || usage

HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
CC=${CC:-cc}
CFLAGS=(-std=c11 -D_GNU_SOURCE -Wall -Wextra -Wpedantic -Werror -g)
SRC=$HERE/fake_gomuksffi.c

"$CC" "${CFLAGS[@]}" -O1 -shared -fPIC -o "$OUT/libfakegomuksffi.so" "$SRC" -lpthread
"$CC" "${CFLAGS[@]}" -O1 -shared -fPIC -DFAKE_GOMUKS_NO_DOWNLOAD \
  -o "$OUT/libfakegomuksffi-nodownload.so" "$SRC" -lpthread
"$CC" "${CFLAGS[@]}" -O1 -shared -fPIC -DFAKE_GOMUKS_GO_RUNTIME \
  -o "$OUT/libfakegomuksffi-go.so" "$SRC" -lpthread
printf 'void _cgo_panic(void);\nvoid _cgo_panic(void) {}\n' |
  "$CC" "${CFLAGS[@]}" -O1 -shared -fPIC -x c -o "$OUT/libnotgomuks-go.so" -
echo "built $OUT/libfakegomuksffi.so, $OUT/libfakegomuksffi-nodownload.so, $OUT/libfakegomuksffi-go.so and $OUT/libnotgomuks-go.so"

# Prototype/type check against the pinned upstream header, when it is on this machine.
HEADER=${GOMUKSFFI_H:-}
if [[ -z "$HEADER" ]]; then
  MODCACHE=$(go env GOMODCACHE 2>/dev/null || true)
  HEADER=${MODCACHE:-$HOME/go/pkg/mod}/go.mau.fi/gomuks@v0.2607.0/pkg/ffi/gomuksffi.h
fi
if [[ -f "$HEADER" ]]; then
  "$CC" "${CFLAGS[@]}" -fsyntax-only "-DFAKE_GOMUKS_UPSTREAM_HEADER=\"$HEADER\"" "$SRC"
  echo "prototypes match $HEADER"
else
  echo "note: $HEADER not found, upstream prototype check skipped" >&2
fi

# Exactly the FFI's symbols are exported.
syms=$(nm -D --defined-only "$OUT/libfakegomuksffi.so" | awk '$2 == "T" { print $3 }' | sort | tr '\n' ' ')
want="GomuksDestroy GomuksDownloadMediaPath GomuksFreeBuffer GomuksInit GomuksStart GomuksSubmitCommand GomuksUploadMediaBytes GomuksUploadMediaPath "
[[ "$syms" == "$want" ]] || { echo "unexpected exports: $syms" >&2; exit 1; }

[[ $SMOKE == 1 ]] || exit 0

SAN=(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
ASAN_DIR=$OUT/smoke-asan
mkdir -p "$ASAN_DIR"
"$CC" "${CFLAGS[@]}" -O1 "${SAN[@]}" -shared -fPIC -o "$ASAN_DIR/libfakegomuksffi.so" "$SRC" -lpthread
"$CC" "${CFLAGS[@]}" -O1 "${SAN[@]}" "$HERE/smoke.c" -L"$ASAN_DIR" -lfakegomuksffi \
  -Wl,-rpath,"$ASAN_DIR" -lpthread -o "$ASAN_DIR/smoke"
# Prove the sanitizers are really in the binary (captured first: grep -q would SIGPIPE nm).
san_syms=$(nm "$ASAN_DIR/smoke")
grep -q __asan_init <<<"$san_syms" || { echo "smoke: ASan not linked" >&2; exit 1; }
grep -q __ubsan_handle <<<"$san_syms" || { echo "smoke: UBSan not linked" >&2; exit 1; }
"$CC" "${CFLAGS[@]}" -O1 "$HERE/smoke.c" -L"$OUT" -lfakegomuksffi -Wl,-rpath,"$OUT" -lpthread \
  -o "$OUT/smoke"

echo "-- smoke: ASan + UBSan"
ASAN_OPTIONS=detect_leaks=1:exitcode=23 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
  "$ASAN_DIR/smoke"

echo "-- smoke: valgrind"
command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; exit 1; }
valgrind -q --leak-check=full --error-exitcode=1 "$OUT/smoke"
echo "smoke passed (ASan+UBSan, valgrind)"
