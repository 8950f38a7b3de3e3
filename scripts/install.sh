#!/usr/bin/env bash
# Installs the C library under PREFIX:
#   lib/libtether.so.X.Y.Z (SONAME libtether.so.ABI) with the links libtether.so.ABI and
#   libtether.so, where ABI is MAJOR.MINOR before 1.0 (a minor release may change the ABI
#   then) and MAJOR from 1.0 on, lib/libtether.a, include/tether.h, the pkg-config files tether.pc (shared)
#   and tether-static.pc (links libtether.a), and a CMake package in lib/cmake/tether
#   (imported targets tether::tether and tether::tether_static).
#   scripts/install.sh PREFIX [--debug]     (default: the `dist` profile, LTO)
# Installed libraries have their debug info stripped (the build tree keeps it); set
# TETHER_SPLIT_DEBUG=1 to keep it next to the library (libtether.so.X.Y.Z.debug, found by gdb
# through a .gnu_debuglink).
# Honours CARGO_TARGET_DIR. For packagers: DESTDIR is prepended to every installed path but not to the paths written
# into the pkg-config and CMake files; LIBDIR (default lib) may be e.g. lib/x86_64-linux-gnu.
# Then: cc app.c $(pkg-config --cflags --libs tether)          (shared library)
#       cc app.c $(pkg-config --cflags --libs tether-static)   (static library)
#       find_package(tether 0.1 REQUIRED) + target_link_libraries(app PRIVATE tether::tether)
set -euo pipefail
PREFIX=${1:?usage: scripts/install.sh PREFIX [--debug]}
# Both relative to where it was called from; PREFIX is written absolute into the pkg-config
# and CMake files.
[[ $PREFIX == /* ]] || PREFIX=$PWD/$PREFIX
[[ -z ${DESTDIR:-} || $DESTDIR == /* ]] || DESTDIR=$PWD/$DESTDIR
# Written as is into tether.pc, where pkg-config would split it at a space, and into sed
# replacements, where & and | mean something.
bad='[[:space:]&|\]'
if [[ $PREFIX =~ $bad ]]; then
  echo "install.sh: PREFIX must not hold spaces, '&', '|' or '\\': $PREFIX" >&2
  exit 2
fi
# Readable by everyone whatever the caller's umask (a staged tree is copied as is).
umask 022
cd "$(dirname "$0")/.."
PROFILE=dist
[[ "${2:-}" == "--debug" ]] && PROFILE=dev
OUTDIR=$PROFILE
[[ $PROFILE == dev ]] && OUTDIR=debug
LIBDIR=${LIBDIR:-lib}
DEST=${DESTDIR:-}$PREFIX
VERSION=$(sed -n 's/^#define TETHER_VERSION_STRING "\(.*\)"/\1/p' include/tether.h)
MAJOR=${VERSION%%.*}
MINOR=${VERSION#*.}; MINOR=${MINOR%%.*}
# The loader then refuses an incompatible library instead of loading it under an old name:
# an app linked against 0.1 asks for libtether.so.0.1, which a 0.2 install does not provide.
ABI=$MAJOR
[[ $MAJOR == 0 ]] && ABI=$MAJOR.$MINOR
SONAME=libtether.so.$ABI
# The SONAME is set here rather than in a build script so that the build tree's
# libtether.so, which tests link with -ltether, keeps resolving by that name. The same
# command prints the system libraries a static link needs, as rustc reports them for this
# target (cargo replays the note when nothing is rebuilt).
PRIVATE=$(cargo rustc --quiet --profile "$PROFILE" -p tether --lib --crate-type cdylib,staticlib \
  -- -C link-arg=-Wl,-soname,"$SONAME" --print native-static-libs 2>&1 \
  | sed -n 's/.*native-static-libs: //p' | tail -1)
[[ -n $PRIVATE ]] || { echo "install.sh: rustc did not report the native static libraries" >&2; exit 1; }
TARGET=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
SO=$TARGET/$OUTDIR/libtether.so
grep -q "SONAME.*\[$SONAME\]" <<<"$(readelf -d "$SO")" || { echo "install.sh: $SO has no SONAME $SONAME" >&2; exit 1; }

L=$DEST/$LIBDIR
mkdir -p "$L/pkgconfig" "$L/cmake/tether" "$DEST/include"
install -m 644 include/tether.h "$DEST/include/tether.h"
REAL=libtether.so.$VERSION
rm -f "$L/$REAL" "$L/$SONAME" "$L/libtether.so"  # never write through a mapped library
install -m 755 "$SO" "$L/$REAL"
install -m 644 "$TARGET/$OUTDIR/libtether.a" "$L/libtether.a"
if [[ ${TETHER_SPLIT_DEBUG:-0} == 1 ]]; then
  objcopy --only-keep-debug "$L/$REAL" "$L/$REAL.debug"
  chmod 644 "$L/$REAL.debug"
  strip --strip-unneeded "$L/$REAL"
  (cd "$L" && objcopy --add-gnu-debuglink="$REAL.debug" "$REAL")
else
  strip --strip-unneeded "$L/$REAL"
fi
strip --strip-debug "$L/libtether.a"
ln -sf "$REAL" "$L/$SONAME"
ln -sf "$SONAME" "$L/libtether.so"

subst() {
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@LIBDIR@|$LIBDIR|g" -e "s|@VERSION@|$VERSION|g" \
    -e "s|@MAJOR@|$MAJOR|g" -e "s|@MINOR@|$MINOR|g" -e "s|@SONAME@|$SONAME|g" "$@"
}
subst -e "s|@PRIVATE_LIBS@|$PRIVATE|" tether.pc.in > "$L/pkgconfig/tether.pc"
subst -e 's|^Name: tether|Name: tether-static|' -e 's|^Libs: .*|Libs: ${libdir}/libtether.a @PRIVATE_LIBS@|' \
  -e "s|@PRIVATE_LIBS@|$PRIVATE|" -e '/^Libs.private/d' tether.pc.in > "$L/pkgconfig/tether-static.pc"
# The CMake files find the prefix relative to themselves, so a staged (DESTDIR) or moved
# install still works: one ".." per directory of LIBDIR/cmake/tether.
UP=$(sed -e 's|[^/][^/]*|..|g' <<<"$LIBDIR/cmake/tether")
# CMake wants a list of library names, rustc gives linker flags.
CMAKE_LIBS=$(tr ' ' '\n' <<<"$PRIVATE" | sed -n 's/^-l//p' | paste -sd';')
subst -e "s|@UP@|$UP|g" -e "s|@STATIC_LIBS@|$CMAKE_LIBS|g" cmake/tetherConfig.cmake.in > "$L/cmake/tether/tetherConfig.cmake"
subst cmake/tetherConfigVersion.cmake.in > "$L/cmake/tether/tetherConfigVersion.cmake"
echo "installed tether $VERSION ($PROFILE, $(stat -c %s "$L/$REAL") bytes) into $DEST"
