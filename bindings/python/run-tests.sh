#!/usr/bin/env bash
# Tests the Python binding the way a user installs it:
#  1. bindings/python/build-wheel.sh builds the manylinux wheel (cargo zigbuild, glibc 2.17)
#     and the sdist, and checks them with auditwheel;
#  2. creates bindings/python/.venv (if missing), installs pytest and that wheel into it (set
#     TETHER_LIBRARY=/path/to/libtether.so to skip 1 and `pip install ./bindings/python` with
#     that library bundled instead);
#  3. builds tether-backend (debug) and runs the pytest suite against it;
#  4. makes a fresh venv with no cargo reachable, installs the wheel alone into it and runs
#     both examples against a backend that cuts every 40 events, checking that they resumed
#     and saw every buffered event exactly once, and both again with --in-process against
#     the libgomuksffi double (tests/inproc); then checks that installing the sdist there
#     fails with a message that names cargo.
# Needs only Python 3 (with venv), Rust and a C compiler (the double). Honours
# CARGO_TARGET_DIR. Exits non-zero on any failure, including a pytest run that collected no
# test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=$ROOT/bindings/python/.venv
WORK=$(mktemp -d)
source scripts/backend.sh

cleanup() {
  stop_backend
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }
command -v "$PY" >/dev/null || { echo "$PY not found: install Python 3" >&2; exit 1; }

echo "== python: virtualenv $VENV"
if [[ ! -x $VENV/bin/python ]]; then
  if ! "$PY" -m venv "$VENV"; then
    rm -rf "$VENV"
    echo "'$PY -m venv' failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
VPY=$VENV/bin/python
"$VPY" -m pip install --quiet --disable-pip-version-check "pytest>=7" "orjson>=3.9"

DIST=$ROOT/target/python-dist
if [[ -n ${TETHER_LIBRARY:-} ]]; then
  echo "== python: pip install ./bindings/python (bundling TETHER_LIBRARY=$TETHER_LIBRARY)"
  "$VPY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
else
  t0=$SECONDS
  bindings/python/build-wheel.sh "$DIST"
  echo "   (wheel and sdist: $((SECONDS - t0)) s)"
  "$VPY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps "$DIST"/tether-*.whl
fi
"$VPY" - <<'PY'
import pathlib, tether
pkg = pathlib.Path(tether.__file__).resolve()
assert "site-packages" in str(pkg), f"tether imported from {pkg}, not from the install"
print(f"installed tether {tether.__version__} at {pkg.parent}; library {tether.library_path()} ({tether.library_version()})")
PY

echo "== python: cargo build -p tether-testkit --bin tether-backend"
cargo build --quiet -p tether-testkit --bin tether-backend
TARGET=$(cargo metadata --format-version 1 --no-deps | "$VPY" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export TETHER_BACKEND=${TETHER_BACKEND:-$TARGET/debug/tether-backend}

echo "== python: pytest (bindings/python/tests)"
rc=0
# The pytest script, not `python -m pytest`: the sources next to the tests stay off sys.path,
# so the tests exercise the installed wheel.
(cd bindings/python && "$VENV/bin/pytest" -q -p no:cacheprovider --junitxml="$WORK/junit.xml" tests) || rc=$?
if [[ $rc -eq 5 ]]; then echo "pytest collected no tests" >&2; exit 1; fi
if [[ $rc -ne 0 ]]; then echo "pytest failed (exit status $rc)" >&2; exit "$rc"; fi
read -r PASSED FAILED < <("$VPY" - "$WORK/junit.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suites = [root] if root.tag == "testsuite" else list(root)
t = sum(int(s.get("tests", 0)) for s in suites)
bad = sum(int(s.get(k, 0)) for s in suites for k in ("failures", "errors"))
skipped = sum(int(s.get("skipped", 0)) for s in suites)
print(t - bad - skipped, bad)
PY
)
[[ $PASSED -gt 0 ]] || { echo "no test passed" >&2; exit 1; }

# What a user without Rust has: the wheel, a fresh venv, no cargo on PATH or in ~/.cargo.
FRESH=$WORK/fresh-venv
CLEAN_PATH=
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do [[ -n $d && ! -e $d/cargo ]] && CLEAN_PATH=${CLEAN_PATH:+$CLEAN_PATH:}$d; done
no_cargo() { env -u CARGO_HOME -u RUSTUP_HOME -u CARGO_TARGET_DIR HOME="$WORK/home" PATH="$FRESH/bin:$CLEAN_PATH" "$@"; }
mkdir -p "$WORK/home"
FPY=$VPY
if [[ -z ${TETHER_LIBRARY:-} ]]; then
  echo "== python: the wheel alone in a fresh venv, no cargo"
  t0=$SECONDS
  "$PY" -m venv "$FRESH"
  FPY=$FRESH/bin/python
  if no_cargo bash -c 'command -v cargo'; then echo "cargo is still reachable" >&2; exit 1; fi
  no_cargo "$FPY" -m pip install --quiet --disable-pip-version-check "$DIST"/tether-*.whl
  no_cargo "$FPY" -c '
import pathlib, sys, tether
lib = pathlib.Path(tether.library_path()).resolve()
assert str(lib).startswith(str(pathlib.Path(sys.prefix).resolve())), f"{lib} is not inside the fresh venv"
print(f"fresh venv: tether {tether.__version__}, library {lib.name} ({tether.library_version()})")'
fi

# run_example NAME [restart]: with "restart", the backend also restarts 2.5 s in, which the
# example must report as RESUMED RESET without counting a gap.
run_example() {
  local name=$1 restart=${2:-} out=$WORK/$1.out
  start_backend "$WORK/backend.out" "$TETHER_BACKEND" --event-rate 20 --cut-after-events 40 || return 1
  local ok=1 pid
  timeout 60 env PATH="$FRESH/bin:$CLEAN_PATH" HOME="$WORK/home" "$FPY" "examples/python/$name" "http://$BACKEND_ADDR" 6 >"$out" 2>&1 &
  pid=$!
  if [[ -n $restart ]]; then
    sleep 2.5
    restart_backend || ok=0
  fi
  wait "$pid" || ok=0
  stop_backend
  [[ -z $restart ]] || grep -q "RESUMED RESET" "$out" || ok=0
  grep -q "resuming after the last received event" "$out" || ok=0
  grep -q "in order, no gap" "$out" || ok=0
  grep -q "^pong: rtt" "$out" || ok=0
  grep -q "^response .*: OK" "$out" || ok=0
  grep -q "GAP\|WITH GAPS" "$out" && ok=0
  if [[ $ok -eq 1 ]]; then
    echo "ok   examples/python/$name: $(tail -1 "$out")"
  else
    echo "FAIL examples/python/$name; its output:" >&2
    cat "$out" >&2
    return 1
  fi
}

echo "== python: examples against tether-backend --event-rate 20 --cut-after-events 40"
run_example ping_ack_resume.py restart
run_example ping_ack_resume_async.py
PASSED=$((PASSED + 2))

# The same examples through the in-process transport: the startup events and every request
# answered, and they say that pings, cuts and resume do not apply.
run_example_in_process() {
  local name=$1 out=$WORK/$1.inproc.out ok=1
  timeout 60 env PATH="$FRESH/bin:$CLEAN_PATH" HOME="$WORK/home" "$FPY" "examples/python/$name" \
    --in-process "$WORK/fake-ffi/libfakegomuksffi.so" "$WORK/inproc-root-$name" 3 >"$out" 2>&1 || ok=0
  grep -q "^event sync_status" "$out" || ok=0
  grep -q "no pings, cuts or resume" "$out" || ok=0
  grep -q "^response .*: OK" "$out" || ok=0
  grep -q "access_token': '<redacted>'" "$out" || ok=0
  if [[ $ok -eq 1 ]]; then
    echo "ok   examples/python/$name --in-process: $(tail -1 "$out")"
  else
    echo "FAIL examples/python/$name --in-process; its output:" >&2
    cat "$out" >&2
    return 1
  fi
}

echo "== python: examples --in-process against the libgomuksffi double"
tests/inproc/build.sh "$WORK/fake-ffi" >/dev/null
run_example_in_process ping_ack_resume.py
run_example_in_process ping_ack_resume_async.py
PASSED=$((PASSED + 2))

if [[ -z ${TETHER_LIBRARY:-} ]]; then
  echo "== python: the sdist without cargo fails and says why"
  rc=0
  no_cargo "$FPY" -m pip install --disable-pip-version-check --no-deps "$DIST"/tether-*.tar.gz >"$WORK/sdist.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then echo "the sdist installed without cargo?" >&2; exit 1; fi
  if grep -q "cargo not found" "$WORK/sdist.out"; then
    echo "ok   sdist without cargo: $(grep -o 'cargo not found[^.]*' "$WORK/sdist.out" | head -1)"
    PASSED=$((PASSED + 1))
  else
    cat "$WORK/sdist.out" >&2; echo "installing the sdist without cargo did not say that cargo is missing" >&2; exit 1
  fi
  echo "   (fresh venv, examples and sdist check: $((SECONDS - t0)) s)"
fi
echo "python: $PASSED passed, $FAILED failed"
