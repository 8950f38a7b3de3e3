# Shared by bench/run.sh, bench/pairs.sh and bench/compare.sh, sourced from the repository root
# with PY set: the background server and the client runs that record JSON lines.

BLASTER_PID=
cleanup() { [[ -n $BLASTER_PID ]] && kill "$BLASTER_PID" 2>/dev/null || true; }
trap cleanup EXIT

# Starts a server (a tether-bench one unless the first argument is a path) in the background and
# sets BLASTER_PID and port from the JSON line it prints once listening ("port", or tether-backend's
# "address"); the file is removed first, so an old one is never read.
start_server() {
  local out=$1; shift
  rm -f "$out"
  if [[ $1 == */* ]]; then "$@" > "$out" & else target/release/tether-bench "$@" > "$out" & fi
  BLASTER_PID=$!
  until port=$($PY -c 'import json,sys; d=json.loads(open(sys.argv[1]).readline()); print(d.get("port") or d["address"].rsplit(":",1)[1])' "$out" 2>/dev/null); do
    kill -0 "$BLASTER_PID" || { echo "server failed: $*" >&2; exit 1; }
    sleep 0.2
  done
}

# Stops the server start_server started. One that already exited is reported, not fatal: its
# clients all finished (a client that lost it fails the run in run_client).
stop_server() {
  kill "$BLASTER_PID" 2>/dev/null || echo "warning: the server had already exited" >&2
  wait "$BLASTER_PID" 2>/dev/null || true; BLASTER_PID=
}

# One client run: adds the scenario to the client's JSON line, appended to $RES; a failing client
# fails the run.
run_client() {
  local shape=$1 z=$2 round=$3; shift 3
  local line
  line=$(timeout 300 "$@") || { echo "client failed: $*" >&2; exit 1; }
  echo "$line" | $PY -c 'import json,sys; d=json.loads(sys.stdin.read()); d.update(shape=sys.argv[1], compress=int(sys.argv[2]), round=int(sys.argv[3])); print(json.dumps(d))' "$shape" "$z" "$round" >> "$RES"
  echo "   $line"
}

# Calls FN SHAPE COMPRESS for each stream of section 1 (realistic, 1 KB and 10 KB events, each
# uncompressed and compressed) with its blaster running (writing NAME-blaster.out in $OUT, by
# default bench/out) and URL and port set: N_SMALL events of the first two sizes, N_BIG of 10 KB.
each_stream() {
  local name=$1 fn=$2 spec shape n z
  for spec in "realistic $N_SMALL" "1024 $N_SMALL" "10240 $N_BIG"; do
    read -r shape n <<< "$spec"
    for z in 0 1; do
      echo "== $shape events, compress=$z, $n events, $ROUNDS rounds"
      start_server "${OUT:-bench/out}/$name-blaster.out" blaster 0 "$shape" "$n" "$z" 16
      URL=http://127.0.0.1:$port
      "$fn" "$shape" "$z"
      stop_server
    done
  done
}
