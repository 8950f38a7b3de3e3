#!/usr/bin/env bash
# Builds the distributable Python packages into OUT (default target/python-dist):
#   tether-X.Y.Z-py3-none-manylinux_2_17_<arch>.whl   the library linked against glibc 2.17
#       by cargo-zigbuild (`dist` profile, LTO, stripped), any Python 3 (ctypes, no extension)
#   tether-X.Y.Z.tar.gz                                 the sdist, with the Rust crate in rust/
# and checks them: `auditwheel show` must find the wheel consistent with its own platform
# tag, and both must carry LICENSE.
# The build tools (build, setuptools, cargo-zigbuild, ziglang, auditwheel) go into
# bindings/python/.build-venv, made on first use. Needs Python 3 (with venv) and cargo.
#   bindings/python/build-wheel.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-python3}
OUT=${1:-$ROOT/target/python-dist}
TOOLS=$ROOT/bindings/python/.build-venv
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

# Pinned: a new zig or cargo-zigbuild may change how the library links.
REQS=("setuptools>=77" "build==1.6.1" "cargo-zigbuild==0.24.1" "ziglang==0.17.1" "auditwheel==6.8.2")
if [[ ! -x $TOOLS/bin/python ]] || ! cmp -s <(printf '%s\n' "${REQS[@]}") "$TOOLS/requirements.txt"; then
  echo "== python packaging: tools venv $TOOLS"
  rm -rf "$TOOLS"
  "$PY" -m venv "$TOOLS"
  "$TOOLS/bin/python" -m pip install --quiet --disable-pip-version-check "${REQS[@]}"
  printf '%s\n' "${REQS[@]}" > "$TOOLS/requirements.txt"
fi
# cargo finds the zigbuild subcommand on PATH, and cargo-zigbuild runs `python3 -m ziglang`.
export PATH=$TOOLS/bin:$PATH
unset TETHER_LIBRARY  # a wheel for distribution is always the dist build

rm -rf "$OUT"
mkdir -p "$OUT"
echo "== python packaging: wheel (cargo zigbuild --profile dist --target $(uname -m)-unknown-linux-gnu.2.17)"
"$TOOLS/bin/python" -m pip wheel --quiet --disable-pip-version-check --no-build-isolation --no-deps \
  -w "$OUT" ./bindings/python
echo "== python packaging: sdist"
"$TOOLS/bin/python" -m build --sdist --no-isolation --outdir "$OUT" ./bindings/python >"$OUT/sdist.log" 2>&1 \
  || { cat "$OUT/sdist.log" >&2; exit 1; }
rm -f "$OUT/sdist.log"

WHEEL=$(ls "$OUT"/tether-*.whl)
SDIST=$(ls "$OUT"/tether-*.tar.gz)
PLAT=$(basename "$WHEEL" .whl); PLAT=${PLAT##*-}
"$TOOLS/bin/auditwheel" show "$WHEEL" | tee "$OUT/auditwheel.txt"
# auditwheel wraps its prose at any word.
grep -q "consistent with the following platform tag: \"$PLAT\"" <<<"$(tr -s ' \n' '  ' <"$OUT/auditwheel.txt")" \
  || { echo "auditwheel does not confirm the wheel's tag $PLAT" >&2; exit 1; }
[[ $PLAT == manylinux_2_1[0-9]_* || $PLAT == manylinux_2_2[0-8]_* ]] \
  || { echo "$PLAT needs a newer glibc than manylinux_2_28" >&2; exit 1; }
"$TOOLS/bin/python" - "$WHEEL" "$SDIST" <<'PY'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
names = zipfile.ZipFile(wheel).namelist()
assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), f"no LICENSE in {wheel}"
assert "tether/_native/libtether.so" in names, f"no library in {wheel}"
names = tarfile.open(sdist).getnames()
for want in ("LICENSE", "rust/Cargo.toml", "rust/Cargo.lock", "rust/include/tether.h", "rust/src/lib.rs"):
    assert any(n.split("/", 1)[-1] == want for n in names), f"no {want} in {sdist}"
PY
ls -l "$OUT"
