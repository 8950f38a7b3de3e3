# Sourced by the test scripts that run an example against tether-backend.
#
# start_backend OUT BIN [ARGS...]: starts BIN (tether-backend) in the background with its
# output in OUT (stderr in OUT.err) and waits for the address it prints once listening. Sets
# BACKEND_PID and BACKEND_ADDR; fails with the backend's output when it exits first or prints
# nothing in 10 s. stop_backend: kills and reaps it (callers also call it from their EXIT trap).
BACKEND_PID=
BACKEND_ADDR=

start_backend() {
  local out=$1 _
  shift
  # Emptied here: the child's own truncation may come after the first read below, which would
  # then find the address a previous backend wrote.
  : >"$out"
  "$@" >"$out" 2>"$out.err" &
  BACKEND_PID=$!
  BACKEND_ADDR=
  for _ in $(seq 100); do
    BACKEND_ADDR=$(grep -m1 -oE '127\.0\.0\.1:[0-9]+' "$out" || true)
    [[ -n $BACKEND_ADDR ]] && return 0
    kill -0 "$BACKEND_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "tether-backend did not start ($*); its output:" >&2
  cat "$out" "$out.err" >&2
  stop_backend
  return 1
}

stop_backend() {
  if [[ -n $BACKEND_PID ]]; then
    kill -CONT "$BACKEND_PID" 2>/dev/null || true
    kill "$BACKEND_PID" 2>/dev/null || true
    wait "$BACKEND_PID" 2>/dev/null || true
    BACKEND_PID=
  fi
}

# restart_backend: has the running tether-backend restart as a real one would (a new run id,
# event ids afresh, every connection cut), through its control endpoint.
restart_backend() {
  local reply
  exec 3<>"/dev/tcp/${BACKEND_ADDR%:*}/${BACKEND_ADDR#*:}"
  printf 'POST /_testkit/restart HTTP/1.0\r\nContent-Length: 0\r\n\r\n' >&3
  reply=$(cat <&3)
  exec 3>&-
  [[ $reply == "HTTP/1."[01]" 200"* ]] || { echo "restart refused: ${reply%%$'\r'*}" >&2; return 1; }
}
