#!/usr/bin/env bash
# Installs the C library under PREFIX: lib/libtether.so, lib/libtether.a, include/tether.h,
# and two pkg-config files, tether.pc (shared) and tether-static.pc (links libtether.a).
#   scripts/install.sh PREFIX [--debug]     (default: release build)
# Then: cc app.c $(pkg-config --cflags --libs tether)          (shared library)
#       cc app.c $(pkg-config --cflags --libs tether-static)   (static library)
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${1:?usage: scripts/install.sh PREFIX [--debug]}
PROFILE=release
[[ "${2:-}" == "--debug" ]] && PROFILE=debug
FLAG=--release
[[ $PROFILE == debug ]] && FLAG=
cargo build --quiet $FLAG -p tether --lib
# The system libraries a static link needs, as rustc reports them for this target.
PRIVATE=$(cargo rustc --quiet $FLAG -p tether --lib --crate-type staticlib -- --print native-static-libs 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -1)
VERSION=$(sed -n 's/^#define TETHER_VERSION_STRING "\(.*\)"/\1/p' include/tether.h)
mkdir -p "$PREFIX/lib/pkgconfig" "$PREFIX/include"
install -m 644 include/tether.h "$PREFIX/include/tether.h"
install -m 755 "target/$PROFILE/libtether.so" "$PREFIX/lib/libtether.so"
install -m 644 "target/$PROFILE/libtether.a" "$PREFIX/lib/libtether.a"
subst() { sed -e "s|@PREFIX@|$PREFIX|" -e "s|@VERSION@|$VERSION|" -e "s|@PRIVATE_LIBS@|$PRIVATE|" "$@"; }
subst tether.pc.in > "$PREFIX/lib/pkgconfig/tether.pc"
subst -e 's|^Name: tether|Name: tether-static|' -e 's|^Libs: .*|Libs: ${libdir}/libtether.a @PRIVATE_LIBS@|' \
  -e "s|@PRIVATE_LIBS@|$PRIVATE|" -e '/^Libs.private/d' tether.pc.in > "$PREFIX/lib/pkgconfig/tether-static.pc"
echo "installed tether $VERSION ($PROFILE) into $PREFIX"
