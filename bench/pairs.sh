#!/usr/bin/env bash
# Paired rounds for the "at least as fast as" comparisons of section 1, which five-round medians
# cannot decide on this machine (single rounds of one client spread by up to 2x):
#   bench/pairs.sh [ROUNDS]      (ROUNDS default 21; about 5 s per round over the six streams)
# Each round runs both clients of a pair back to back against the same blaster, swapping their
# order every other round: the lending batch against C poll, and the Python binding against
# picows (both with orjson), and C poll against the floor (a ratio near 0.8 needs pairs too).
# Prints, per stream, the median of the per-round ratios, their interquartile range, and in
# how many rounds the first client was at least as fast (for C poll against the floor: at
# least 0.8x).
# Uses what bench/run.sh built (target/release, bench/out/blast_c, bench/.venv): run that first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-21}
PY=bench/.venv/bin/python
RES=bench/out/pairs.jsonl
[[ -x bench/out/blast_c && -x $PY ]] || { echo "run bench/run.sh first" >&2; exit 1; }
: > "$RES"
# start_server, stop_server, run_client.
source bench/lib.sh

N_SMALL=50000 N_BIG=10000
rounds() {
  local shape=$1 z=$2 r c clients
  for ((r = 1; r <= ROUNDS; r++)); do
    clients=("bench/out/blast_c $URL $z lent" "bench/out/blast_c $URL $z single"
             "$PY bench/py/tether_client.py $URL $z orjson" "$PY bench/py/picows_client.py $URL $z orjson"
             "target/release/tether-bench floor ws://127.0.0.1:$port $z")
    if ((r % 2 == 0)); then clients=("${clients[4]}" "${clients[1]}" "${clients[0]}" "${clients[3]}" "${clients[2]}"); fi
    for c in "${clients[@]}"; do
      run_client "$shape" "$z" "$r" $c
    done
  done
}
each_stream pairs rounds

$PY - "$RES" <<'EOF'
import json, statistics, sys
by = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    by.setdefault((d["shape"], d["compress"], d["round"]), {})[d["client"]] = d["eps"]
for a, b, at_least in (("c-lent", "c-single", 1.0), ("python-tether-orjson", "python-picows-orjson", 1.0),
                       ("c-single", "floor", 0.8)):
    print(f"\n{a} / {b} (events/s, per-round ratio)")
    print(f"| stream | median | IQR | rounds >= {at_least:g} |\n|---|---:|---:|---:|")
    for shape in ("realistic", "1024", "10240"):
        for z in (0, 1):
            r = [v[a] / v[b] for (s, c, _), v in sorted(by.items()) if s == shape and c == z]
            q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
            name = f"{shape if shape == 'realistic' else str(int(shape) // 1024) + ' KB'}, {'compressed' if z else 'uncompressed'}"
            print(f"| {name} | {statistics.median(r):.3f}x | {q[0]:.3f}-{q[2]:.3f} | {sum(x >= at_least for x in r)}/{len(r)} |")
EOF
