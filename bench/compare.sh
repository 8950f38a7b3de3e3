#!/usr/bin/env bash
# Same-run comparison of the working tree against another revision, for changes that must not
# make the library slower:
#   bench/compare.sh REV [ROUNDS]      (ROUNDS default 5)
# Builds REV (release) in a git worktree under target/bench-compare/, then alternates the two
# builds' clients against one server, so load from elsewhere on the machine hits both alike:
#   - throughput on the realistic stream, plain and compressed: the Rust API, C poll, C batch;
#   - request round trip through the C API (server and client pinned to different cores);
#   - memory per connection (1000 compressed connections);
#   - if bench/run.sh made bench/.venv: the Python binding (with orjson) on the same streams,
#     each side's bindings/python over its own library.
# Prints each figure's median for both and the ratio new/old (throughput: higher is better;
# round trip and memory: lower is better). Writes nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
REV=${1:?usage: bench/compare.sh REV [ROUNDS]}
ROUNDS=${2:-5}
OLD=$ROOT/target/bench-compare/$(git rev-parse --short "$REV")
OUT=$ROOT/target/bench-compare/out
mkdir -p "$OUT"

if [[ ! -d $OLD ]]; then
  git worktree add --detach "$OLD" "$REV" >/dev/null
fi
echo "== building the working tree and $REV (release)"
cargo build --release --quiet -p tether -p tether-bench
(cd "$OLD" && CARGO_TARGET_DIR=$OLD/target cargo build --release --quiet -p tether -p tether-bench)
for side in new old; do
  dir=$ROOT; [[ $side == old ]] && dir=$OLD
  # Each side's own client: the C API may have grown since REV.
  cc -O2 -I"$dir/include" -o "$OUT/blast_c.$side" "$dir/bench/c/blast_c.c" -L"$dir/target/release" -ltether \
    -Wl,-rpath,"$dir/target/release"
done
bench() { local side=$1; shift; if [[ $side == new ]]; then "$ROOT/target/release/tether-bench" "$@"; else "$OLD/target/release/tether-bench" "$@"; fi; }

# start_server and stop_server (the venv is not needed here: any python3 reads the port).
PY=python3
source bench/lib.sh

RES=$OUT/results.jsonl
: > "$RES"
# Appends a client's JSON line tagged with its figure and side.
record() {
  local figure=$1 side=$2 line=$3
  python3 -c 'import json,sys; d=json.loads(sys.argv[3]); d.update(figure=sys.argv[1], side=sys.argv[2]); print(json.dumps(d))' "$figure" "$side" "$line" >> "$RES"
}

for z in 0 1; do
  echo "== throughput, realistic, compress=$z, $ROUNDS rounds"
  start_server "$OUT/server.out" blaster 0 realistic 50000 "$z" 16
  for ((r = 1; r <= ROUNDS; r++)); do
    for side in new old; do
      record "rust z=$z" $side "$(bench $side rust "http://127.0.0.1:$port" "$z")"
      record "c poll z=$z" $side "$("$OUT/blast_c.$side" "http://127.0.0.1:$port" "$z" single)"
      record "c batch z=$z" $side "$("$OUT/blast_c.$side" "http://127.0.0.1:$port" "$z" batch)"
      if [[ -x bench/.venv/bin/python ]]; then
        dir=$ROOT; [[ $side == old ]] && dir=$OLD
        record "python z=$z" $side "$(PYTHONPATH="$dir/bindings/python" TETHER_LIBRARY="$dir/target/release/libtether.so" \
          bench/.venv/bin/python bench/py/tether_client.py "http://127.0.0.1:$port" "$z" orjson)"
      fi
    done
  done
  stop_server
done

echo "== round trip and memory, $ROUNDS rounds"
ulimit -n 8192 2>/dev/null || true
start_server "$OUT/server.out" echo 0
# The round trip with the server on core 0 and the client on core 1, as bench/run.sh's "split"
# figure: unpinned, the placement the scheduler picks moves it by up to 8x.
pin_rtt=()
if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; then
  pin_rtt=(taskset -c 1)
fi
for ((r = 1; r <= ROUNDS; r++)); do
  for side in new old; do
    [[ ${#pin_rtt[@]} == 0 ]] || taskset -a -p -c 0 "$BLASTER_PID" >/dev/null
    record "c rtt" $side "$("${pin_rtt[@]}" "$OUT/blast_c.$side" "http://127.0.0.1:$port" 0 rtt 5000)"
    [[ ${#pin_rtt[@]} == 0 ]] || taskset -a -p -c "0-$(($(nproc) - 1))" "$BLASTER_PID" >/dev/null
    record "memory" $side "$(bench $side conns "http://127.0.0.1:$port" 1000 1 0)"
  done
done
stop_server

python3 - "$RES" "$REV" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
figures = []
for r in rows:
    if r["figure"] not in figures:
        figures.append(r["figure"])
print(f"\n{'figure':<16}{'new':>14}{'old (' + sys.argv[2] + ')':>22}{'new/old':>10}")
for f in figures:
    def med(side):
        vals = []
        for r in rows:
            if r["figure"] == f and r["side"] == side:
                vals.append(r.get("eps") or r.get("p50_us") or r.get("kib_per_conn"))
        return statistics.median(vals)
    new, old = med("new"), med("old")
    unit = "ev/s" if "z=" in f else ("us p50" if f == "c rtt" else "KiB/conn")
    print(f"{f:<16}{new:>10.1f} {unit:<8}{old:>12.1f}{'':>8}{new / old:>8.2f}x")
PY
