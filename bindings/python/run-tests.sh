#!/usr/bin/env bash
# Tests the Python binding the way a user installs it:
#  1. creates bindings/python/.venv (if missing) and installs pytest into it;
#  2. `pip install ./bindings/python`, which builds the release library with cargo and bundles
#     it in the wheel (set TETHER_LIBRARY=/path/to/libtether.so to bundle that build instead);
#  3. builds tether-backend (debug) and runs the pytest suite against it;
#  4. runs both examples against a backend that cuts every 40 events and checks that they
#     resumed and saw every buffered event exactly once.
# Needs only Python 3 (with venv) and Rust. Honours CARGO_TARGET_DIR. Exits non-zero on any
# failure, including a pytest run that collected no test.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PY=${PYTHON:-python3}
VENV=$ROOT/bindings/python/.venv
WORK=$(mktemp -d)
BACKEND_PID=

cleanup() {
  if [[ -n $BACKEND_PID ]]; then kill "$BACKEND_PID" 2>/dev/null || true; wait "$BACKEND_PID" 2>/dev/null || true; fi
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

echo "== python: pip install ./bindings/python (cargo build --release -p tether --lib)"
"$VPY" -m pip install --quiet --disable-pip-version-check --force-reinstall --no-deps ./bindings/python
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

run_example() {
  local name=$1 out=$WORK/$1.out
  "$TETHER_BACKEND" --event-rate 20 --cut-after-events 40 >"$WORK/backend.out" 2>/dev/null &
  BACKEND_PID=$!
  local addr="" i
  for i in $(seq 100); do
    addr=$(grep -o '127\.0\.0\.1:[0-9]*' "$WORK/backend.out" || true)
    [[ -n $addr ]] && break
    sleep 0.1
  done
  [[ -n $addr ]] || { echo "tether-backend did not start" >&2; return 1; }
  local ok=1
  timeout 60 "$VPY" "examples/python/$name" "http://$addr" 6 >"$out" 2>&1 || ok=0
  kill "$BACKEND_PID" 2>/dev/null || true; wait "$BACKEND_PID" 2>/dev/null || true; BACKEND_PID=
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
run_example ping_ack_resume.py
run_example ping_ack_resume_async.py
PASSED=$((PASSED + 2))
echo "python: $PASSED passed, $FAILED failed"
