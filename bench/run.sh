#!/usr/bin/env bash
# Reproduces every benchmark figure into bench/RESULTS.md and bench/charts/*.png.
#   bench/run.sh            full run (5 rounds, about 10 minutes on the 2-core machine)
#   bench/run.sh --smoke    every harness once with tiny sizes, no thresholds (< 90 s after builds)
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
mkdir -p "$OUT"

echo "== building (release)"
# BENCH_SKIP_BUILD=1 reuses target/release as it is (e.g. while src/ is mid-edit).
if [[ -z ${BENCH_SKIP_BUILD:-} ]]; then cargo build --release --quiet -p tether -p tether-bench; fi
LIB=$ROOT/target/release
cc -O2 -Wall -Wextra -Werror -Iinclude -o "$OUT/blast_c" bench/c/blast_c.c -L"$LIB" -ltether -Wl,-rpath,"$LIB"

echo "== Python venv"
PY=bench/.venv/bin/python
[[ -x $PY ]] || python3 -m venv bench/.venv
$PY -m pip install -q --disable-pip-version-check -r bench/py/requirements.txt
# Rebuilt each run so the binding always wraps the library just built.
TETHER_LIBRARY=$LIB/libtether.so $PY -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./bindings/python

HAVE_NODE=0
if command -v node >/dev/null && command -v npm >/dev/null; then
  (cd bench/node && npm ci --silent --no-audit --no-fund) && HAVE_NODE=1
fi
HAVE_GO=0
if command -v go >/dev/null; then
  (cd bench/go && go build -o "$ROOT/$OUT/go-client" .) && HAVE_GO=1
fi

if [[ $SMOKE == 1 ]]; then
  ROUNDS=1; N_SMALL=2000; N_BIG=300
else
  ROUNDS=5; N_SMALL=50000; N_BIG=10000
fi
RES=$OUT/throughput.jsonl
: > "$RES"
BLASTER_PID=
cleanup() { [[ -n $BLASTER_PID ]] && kill "$BLASTER_PID" 2>/dev/null || true; }
trap cleanup EXIT

# Starts a tether-bench server in the background and sets BLASTER_PID and port from the JSON
# line it prints once listening (the file is removed first, so an old one is never read).
start_server() {
  local out=$1; shift
  rm -f "$out"
  target/release/tether-bench "$@" > "$out" &
  BLASTER_PID=$!
  until port=$($PY -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["port"])' "$out" 2>/dev/null); do
    kill -0 "$BLASTER_PID" || { echo "server failed: $*" >&2; exit 1; }
    sleep 0.2
  done
}

# One client run: adds the scenario to the client's JSON line; a failing client fails the run.
run_client() {
  local shape=$1 z=$2 round=$3; shift 3
  local line
  line=$(timeout 300 "$@") || { echo "client failed: $*" >&2; exit 1; }
  echo "$line" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(shape=sys.argv[1], compress=int(sys.argv[2]), round=int(sys.argv[3])); print(json.dumps(d))' "$shape" "$z" "$round" >> "$RES"
  echo "   $line"
}

for spec in "realistic $N_SMALL" "1024 $N_SMALL" "10240 $N_BIG"; do
  set -- $spec; shape=$1; n=$2
  for z in 0 1; do
    echo "== throughput: $shape events, compress=$z, $n events, $ROUNDS rounds"
    start_server "$OUT/blaster.out" blaster 0 "$shape" "$n" "$z" 16
    URL=http://127.0.0.1:$port
    # Round-robin, so load from elsewhere on the machine hits every client alike.
    for ((r = 1; r <= ROUNDS; r++)); do
      run_client "$shape" "$z" "$r" target/release/tether-bench floor "ws://127.0.0.1:$port" "$z"
      run_client "$shape" "$z" "$r" target/release/tether-bench rust "$URL" "$z"
      run_client "$shape" "$z" "$r" "$OUT/blast_c" "$URL" "$z" single
      run_client "$shape" "$z" "$r" "$OUT/blast_c" "$URL" "$z" batch
      run_client "$shape" "$z" "$r" $PY bench/py/tether_client.py "$URL" "$z"
      run_client "$shape" "$z" "$r" $PY bench/py/websockets_client.py "$URL" "$z"
      if [[ $HAVE_NODE == 1 ]]; then run_client "$shape" "$z" "$r" node bench/node/client.js "$URL" "$z"; fi
      if [[ $HAVE_GO == 1 ]]; then run_client "$shape" "$z" "$r" "$OUT/go-client" "$URL" "$z"; fi
    done
    kill "$BLASTER_PID"; wait "$BLASTER_PID" 2>/dev/null || true; BLASTER_PID=
  done
done

if [[ $SMOKE == 1 ]]; then
  N_RTT=200; N_CONNS=20; IDLE_CLIENTS=5; IDLE_SECS=2
else
  N_RTT=5000; N_CONNS=1000; IDLE_CLIENTS=100; IDLE_SECS=60
fi
ulimit -n 8192 2>/dev/null || true
start_server "$OUT/echo.out" echo 0
URL=http://127.0.0.1:$port

echo "== round trip: $N_RTT requests, $ROUNDS rounds"
RTT=$OUT/rtt.jsonl
: > "$RTT"
for ((r = 1; r <= ROUNDS; r++)); do
  for cmd in "target/release/tether-bench rtt-floor ws://127.0.0.1:$port $N_RTT" \
             "$OUT/blast_c $URL 0 rtt $N_RTT" "$PY bench/py/tether_rtt.py $URL $N_RTT"; do
    line=$(timeout 300 $cmd) || { echo "client failed: $cmd" >&2; exit 1; }
    echo "   $line"; echo "$line" >> "$RTT"
  done
done

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
kill "$BLASTER_PID"; wait "$BLASTER_PID" 2>/dev/null || true; BLASTER_PID=

echo "== bandwidth"
target/release/tether-bench stats realistic "$N_SMALL" 16 > "$OUT/bandwidth.json"
cat "$OUT/bandwidth.json"

echo "== report"
{
  echo "command=bench/run.sh${ARGS:+ $ARGS}"
  echo "smoke=$SMOKE"
  echo "rounds=$ROUNDS"
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "uptime=$(uptime)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "cores=$(nproc)"
  echo "mem=$(free -h | awk '/Mem:/{print $2}')"
  echo "kernel=$(uname -r)"
  echo "rustc=$(rustc --version)"
  echo "tether=$(git rev-parse --short HEAD) $(grep -m1 '^version' Cargo.toml)"
  echo "python=$($PY --version 2>&1)"
  echo "websockets=$($PY -c 'import websockets; print(websockets.__version__)')"
  echo "node=$([[ $HAVE_NODE == 1 ]] && node --version || echo absent)"
  echo "ws=$([[ $HAVE_NODE == 1 ]] && node -p 'require("./bench/node/node_modules/ws/package.json").version' || echo absent)"
  echo "go=$([[ $HAVE_GO == 1 ]] && go version || echo absent)"
  echo "coder_websocket=$(awk '/coder\/websocket/{print $NF}' bench/go/go.mod)"
} > "$OUT/env.txt"
if [[ $SMOKE == 1 ]]; then
  # The smoke run checks the harness works end to end; it must not overwrite the real figures.
  $PY bench/report.py "$OUT" "$OUT/SMOKE.md" "$OUT/charts"
else
  $PY bench/report.py "$OUT" bench/RESULTS.md bench/charts
fi
