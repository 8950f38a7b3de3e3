#!/usr/bin/env bash
# Reproduces every benchmark figure into bench/RESULTS.md and bench/charts/*.png.
#   bench/run.sh            full run (5 rounds, about 5 minutes on the 2-core machine after the builds)
#   bench/run.sh --smoke    every harness once with tiny sizes, no thresholds (about 2 minutes);
#                           its data and report go to bench/out/smoke/, so the full run's stay
#   BENCH_ONLY=resume bench/run.sh   only the named benchmarks (comma-separated: throughput, rtt,
#                           memory (sections 3 and 4), resume, bandwidth); report.py then replaces
#                           just their sections (and target rows) in the existing RESULTS.md
# Installs what it needs itself: Python venv in bench/.venv (websockets, matplotlib, the tether
# binding built against target/release/libtether.so), npm packages from bench/node's lockfile,
# Go modules through the module proxy (the Go client is skipped, and said so, without Go).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
SMOKE=0
ARGS="$*"
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; fi
OUT=bench/out
if [[ $SMOKE == 1 ]]; then OUT=bench/out/smoke; fi
mkdir -p "$OUT"
ONLY=${BENCH_ONLY:-}
for b in ${ONLY//,/ }; do
  case $b in throughput | rtt | memory | resume | bandwidth | store) ;; *) echo "BENCH_ONLY: unknown benchmark $b" >&2; exit 2 ;; esac
done
# Whether benchmark $1 runs (all of them without BENCH_ONLY).
want() { [[ -z $ONLY || ",$ONLY," == *",$1,"* ]]; }

echo "== building (release)"
# BENCH_SKIP_BUILD=1 reuses target/release as it is (e.g. while src/ is mid-edit).
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then
  cargo build --release --quiet -p tether -p tether-bench
  # A build of its own: built together, the testkit's tokio features ("full") would be unified
  # into libtether and the Rust-API client, and change what the other benchmarks measure.
  cargo build --release --quiet -p tether-testkit --bin tether-backend
fi
LIB=$ROOT/target/release
cc -O2 -Wall -Wextra -Werror -Iinclude -o "$OUT/blast_c" bench/c/blast_c.c -L"$LIB" -ltether -Wl,-rpath,"$LIB"
cc -O2 -Wall -Wextra -Werror -Iinclude -o "$OUT/resume_c" bench/c/resume_c.c -L"$LIB" -ltether -Wl,-rpath,"$LIB"

echo "== Python venv"
PY=bench/.venv/bin/python
[[ -x $PY ]] || python3 -m venv bench/.venv
$PY -m pip install -q --disable-pip-version-check -r bench/py/requirements.txt
# Rebuilt each run so the binding always wraps the library just built.
TETHER_LIBRARY=$LIB/libtether.so $PY -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python

HAVE_NODE=0
if want throughput && command -v node >/dev/null && command -v npm >/dev/null; then
  (cd bench/node && npm ci --silent --no-audit --no-fund) && HAVE_NODE=1
fi
HAVE_GO=0
if want throughput && command -v go >/dev/null; then
  (cd bench/go && go build -o "$ROOT/$OUT/go-client" .) && HAVE_GO=1
fi

if [[ $SMOKE == 1 ]]; then
  ROUNDS=1; N_SMALL=2000; N_BIG=300
else
  ROUNDS=5; N_SMALL=50000; N_BIG=10000
fi
RES=$OUT/throughput.jsonl
# start_server, stop_server, run_client, each_stream.
source bench/lib.sh

want throughput && : > "$RES"
# Round-robin, so load from elsewhere on the machine hits every client alike.
throughput_rounds() {
  local shape=$1 z=$2 r
  for ((r = 1; r <= ROUNDS; r++)); do
    run_client "$shape" "$z" "$r" target/release/tether-bench floor "ws://127.0.0.1:$port" "$z"
    run_client "$shape" "$z" "$r" target/release/tether-bench rust "$URL" "$z"
    run_client "$shape" "$z" "$r" "$OUT/blast_c" "$URL" "$z" single
    run_client "$shape" "$z" "$r" "$OUT/blast_c" "$URL" "$z" batch
    run_client "$shape" "$z" "$r" "$OUT/blast_c" "$URL" "$z" lent
    run_client "$shape" "$z" "$r" $PY bench/py/tether_client.py "$URL" "$z"
    run_client "$shape" "$z" "$r" $PY bench/py/tether_client.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/websockets_client.py "$URL" "$z"
    run_client "$shape" "$z" "$r" $PY bench/py/websockets_client.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/picows_client.py "$URL" "$z"
    run_client "$shape" "$z" "$r" $PY bench/py/picows_client.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/bare_batch.py "$URL" "$z"
    run_client "$shape" "$z" "$r" $PY bench/py/bare_batch.py "$URL" "$z" orjson
    run_client "$shape" "$z" "$r" $PY bench/py/parse_ceiling.py "$URL" "$z"
    run_client "$shape" "$z" "$r" $PY bench/py/parse_ceiling.py "$URL" "$z" orjson
    if [[ $HAVE_NODE == 1 ]]; then run_client "$shape" "$z" "$r" node bench/node/client.js "$URL" "$z"; fi
    if [[ $HAVE_GO == 1 ]]; then run_client "$shape" "$z" "$r" "$OUT/go-client" "$URL" "$z"; fi
  done
}
want throughput && each_stream throughput throughput_rounds

if [[ $SMOKE == 1 ]]; then
  N_RTT=200; N_CONNS=20; IDLE_CLIENTS=5; IDLE_SECS=2
else
  N_RTT=5000; N_CONNS=1000; IDLE_CLIENTS=100; IDLE_SECS=60
fi
ulimit -n 8192 2>/dev/null || true
if want rtt || want memory; then
  start_server "$OUT/echo.out" echo 0
  URL=http://127.0.0.1:$port
fi

if want rtt; then
  echo "== round trip: $N_RTT requests, $ROUNDS rounds"
  RTT=$OUT/rtt.jsonl
  : > "$RTT"
  # Where the scheduler puts the threads decides the figure on a VM, where waking a thread on an
  # idle core costs tens of µs: unpinned, the bare client sometimes shares the server's core and
  # takes 9 µs, sometimes not and takes 66 µs. So each round also runs pinned: "split" puts the
  # server on core 0 and the client on core 1 (a server elsewhere, as in use), "shared" both on
  # core 0 (the library's own cost alone). "free" is unpinned.
  PLACEMENTS=(free)
  if command -v taskset >/dev/null && taskset -c 0 true 2>/dev/null && taskset -c 1 true 2>/dev/null; then
    PLACEMENTS=(free split shared)
  fi
  ALL_CPUS=0-$(($(nproc) - 1))
  # Pins every thread of the server. Tried twice: `taskset -a` fails (ESRCH) when a thread of
  # the previous client's connection exits between its listing and its pinning.
  pin_server() { taskset -a -p -c "$1" "$BLASTER_PID" >/dev/null 2>&1 || taskset -a -p -c "$1" "$BLASTER_PID" >/dev/null; }
  for ((r = 1; r <= ROUNDS; r++)); do
    for placement in "${PLACEMENTS[@]}"; do
      pin=()
      case $placement in
        free) [[ ${#PLACEMENTS[@]} == 1 ]] || pin_server "$ALL_CPUS" ;;
        # New connection threads inherit the accept thread's affinity.
        split) pin_server 0; pin=(taskset -c 1) ;;
        shared) pin_server 0; pin=(taskset -c 0) ;;
      esac
      for cmd in "target/release/tether-bench rtt-floor ws://127.0.0.1:$port $N_RTT" \
                 "$OUT/blast_c $URL 0 rtt $N_RTT" "$PY bench/py/tether_rtt.py $URL $N_RTT"; do
        line=$(timeout 300 "${pin[@]}" $cmd) || { echo "client failed: $cmd" >&2; exit 1; }
        line=$(echo "$line" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(placement=sys.argv[1], round=int(sys.argv[2])); print(json.dumps(d))' "$placement" "$r")
        echo "   $line"; echo "$line" >> "$RTT"
      done
    done
  done
  [[ ${#PLACEMENTS[@]} == 1 ]] || pin_server "$ALL_CPUS"
fi

if want memory; then
  echo "== memory per connection: $N_CONNS clients; idle cost: $IDLE_CLIENTS clients for $IDLE_SECS s"
  CONNS=$OUT/conns.jsonl
  : > "$CONNS"
  for ((r = 1; r <= ROUNDS; r++)); do
    for z in 0 1; do
      line=$(timeout 300 target/release/tether-bench conns "$URL" "$N_CONNS" "$z" 0) || exit 1
      echo "   $line"; echo "$line" >> "$CONNS"
    done
  done
  line=$(timeout 300 target/release/tether-bench conns "$URL" "$IDLE_CLIENTS" 1 "$IDLE_SECS") || exit 1
  echo "   $line"; echo "$line" > "$OUT/idle.json"
fi
if want rtt || want memory; then
  stop_server
fi

if want resume; then
  if [[ $SMOKE == 1 ]]; then N_CUTS=5; PER_CUT=3; else N_CUTS=200; PER_CUT=10; fi
  # The testkit's gomuks backend (event buffer and resume rule of gomuks, §7); each cut pushes
  # PER_CUT events the cut connection never carries, so they come back only as a replay.
  # Backoff "default" is what a user gets (gomuks: 125 ms minimum); 1 ms shows the library's own cost.
  echo "== resume latency: $N_CUTS cuts per run, $PER_CUT events replayed per cut"
  RESUME=$OUT/resume.jsonl
  : > "$RESUME"
  start_server "$OUT/backend.out" target/release/tether-backend --listen 127.0.0.1:0
  URL=http://127.0.0.1:$port
  for backoff in default 1; do
    for cmd in "target/release/tether-bench resume $URL $N_CUTS $PER_CUT $backoff" \
               "$OUT/resume_c $URL $N_CUTS $PER_CUT $backoff"; do
      line=$(timeout 600 $cmd) || { echo "client failed: $cmd" >&2; exit 1; }
      echo "$line" >> "$RESUME"
      echo "$line" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); v=sorted(d["first_ms"]); p=lambda q: v[round((len(v)-1)*q)]
print("   {}, backoff min {} ms: cut -> first replayed event p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms ({} replayed ids checked)".format(d["client"], d["backoff_min_ms"], p(.5), p(.99), v[-1], d["replayed_checked"]))'
    done
  done
  stop_server
fi

if want store; then
  if [[ $SMOKE == 1 ]]; then S_ROUNDS=1; S_BURST=1000; else S_ROUNDS=$ROUNDS; S_BURST=10000; fi
  # The gomuks store against the testkit's room model: a 100-room initial sync and a burst of
  # live messages over those rooms, with and without a store, alternating in one process.
  # No per-connection queue limit and a buffer that holds the whole burst: the burst must
  # arrive as a burst, not end in a 4001 close and a reset.
  echo "== store: 100 rooms, $S_BURST live messages, $S_ROUNDS rounds"
  start_server "$OUT/backend.out" target/release/tether-backend --listen 127.0.0.1:0 --conn-queue-limit 0 --buffer-size 200000
  timeout 600 target/release/tether-bench-store "http://127.0.0.1:$port" 100 20 "$S_BURST" "$S_ROUNDS" | tee "$OUT/store.jsonl"
  stop_server
fi

if want bandwidth; then
  echo "== bandwidth"
  target/release/tether-bench stats realistic "$N_SMALL" 16 > "$OUT/bandwidth.json"
  cat "$OUT/bandwidth.json"
fi

echo "== report"
# A partial run keeps its own environment file: the full run's one describes the other sections.
ENV_FILE=$OUT/env.txt
if [[ -n $ONLY ]]; then ENV_FILE=$OUT/env-only.txt; fi
{
  echo "command=${ONLY:+BENCH_ONLY=$ONLY }bench/run.sh${ARGS:+ $ARGS}"
  echo "only=$ONLY"
  echo "smoke=$SMOKE"
  echo "rounds=$ROUNDS"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uptime=$(uptime)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "cores=$(nproc)"
  echo "mem=$(free -h | awk '/Mem:/{print $2}')"
  echo "kernel=$(uname -r)"
  echo "rustc=$(rustc --version)"
  echo "tether=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src testkit bench || echo +uncommitted) $(grep -m1 '^version' Cargo.toml)"
  echo "python=$($PY --version 2>&1)"
  echo "websockets=$($PY -c 'import websockets; print(websockets.__version__)')"
  echo "orjson=$($PY -c 'import orjson; print(orjson.__version__)')"
  echo "node=$([[ $HAVE_NODE == 1 ]] && node --version || echo absent)"
  echo "ws=$([[ $HAVE_NODE == 1 ]] && node -p 'require("./bench/node/node_modules/ws/package.json").version' || echo absent)"
  echo "go=$([[ $HAVE_GO == 1 ]] && go version || echo absent)"
  echo "coder_websocket=$(awk '/coder\/websocket/{print $NF}' bench/go/go.mod)"
} > "$ENV_FILE"
REPORT_ARGS=()
if [[ -n $ONLY ]]; then REPORT_ARGS=(--only "$ONLY"); fi
if [[ $SMOKE == 1 ]]; then
  # The smoke run checks the harness works end to end; it must not overwrite the real figures.
  $PY bench/report.py "${REPORT_ARGS[@]}" "$OUT" "$OUT/SMOKE.md" "$OUT/charts"
else
  $PY bench/report.py "${REPORT_ARGS[@]}" "$OUT" bench/RESULTS.md bench/charts
fi
