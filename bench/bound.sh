#!/usr/bin/env bash
# What bounds the Python rows against the orjson parse-only ceiling (section 1), on demand:
#   bench/bound.sh [ROUNDS]      (ROUNDS default 5; about 6 s per round over the six streams)
# Builds bench/py/native_take.c, a C extension that hands each batch's payloads over as bytes
# (the least a native delivery shape does), then runs round-robin against the same blaster: the
# floor and the Rust API (no parse), the ceiling, the native take, the ctypes bare loop and the
# binding (all with orjson). Prints per stream the medians and each one's ratio to the ceiling.
# Uses what bench/run.sh built (target/release, bench/.venv): run that first. Needs the
# Python headers (python3-dev) for the venv's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
PY=bench/.venv/bin/python
RES=bench/out/bound.jsonl
[[ -x target/release/tether-bench && -x $PY ]] || { echo "run bench/run.sh first" >&2; exit 1; }
INC=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
SUFFIX=$($PY -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
[[ -f $INC/Python.h ]] || { echo "no $INC/Python.h: install the Python headers (python3-dev)" >&2; exit 1; }
LIB=$PWD/target/release
mkdir -p bench/out
cc -O2 -Wall -Wextra -Werror -shared -fPIC -I"$INC" -Iinclude -o "bench/out/native_take$SUFFIX" \
  bench/py/native_take.c -L"$LIB" -ltether -Wl,-rpath,"$LIB"
export PYTHONPATH=$PWD/bench/out
: > "$RES"
# start_server, stop_server, run_client.
source bench/lib.sh

N_SMALL=50000 N_BIG=10000
rounds() {
  local shape=$1 z=$2 r
  for ((r = 1; r <= ROUNDS; r++)); do
    run_client "$shape" "$z" "$r" target/release/tether-bench floor "ws://127.0.0.1:$port" "$z"
    run_client "$shape" "$z" "$r" target/release/tether-bench rust "$URL" "$z"
    run_client "$shape" "$z" "$r" $PY bench/py/parse_ceiling.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/native_take_client.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/bare_batch.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/tether_client.py "$URL" "$z" orjson
  done
}
each_stream bound rounds

$PY - "$RES" <<'PYEOF'
import json, statistics, sys
eps = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    eps.setdefault((d["shape"], d["compress"]), {}).setdefault(d["client"], []).append(d["eps"])
cols = ["floor", "rust", "python-native-take-orjson", "python-bare-orjson", "python-tether-orjson"]
print("| stream | ceiling, events/s | " + " | ".join(cols) + " |")
print("|---|---:|" + "---:|" * len(cols))
for (shape, z), by in eps.items():
    ceiling = statistics.median(by["python-parse-orjson"])
    cells = [f"{statistics.median(by[c]) / ceiling:.2f}x" for c in cols]
    print(f"| {shape}, {'compressed' if z else 'uncompressed'} | {ceiling:,.0f} | " + " | ".join(cells) + " |")
PYEOF
