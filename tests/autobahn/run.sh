#!/usr/bin/env bash
# Autobahn client cases (RFC 6455 conformance) against tether's websocket layer.
# The runner is `kosoku` from PyPI (a maintained Rust port of the Autobahn fuzzingserver that
# drives Autobahn's own case files; the original autobahntestsuite needs Python 2).
# Compression groups 12.* and 13.* are excluded: tether does not negotiate permessage-deflate
# (gomuks compresses inside the payload instead).
# Passes only if every case is OK, NON-STRICT or INFORMATIONAL (Autobahn's own pass verdicts) and
# none FAILED/UNIMPLEMENTED. Takes ~30 s after the first build.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/target/autobahn"
mkdir -p "$out"
if [ ! -x "$out/venv/bin/kosoku" ]; then
    python3 -m venv "$out/venv"
    "$out/venv/bin/pip" install --quiet 'kosoku==0.1.0'
fi
( cd "$root/tests/autobahn/client" && CARGO_TARGET_DIR="$out" cargo build --quiet )

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rm -rf "$out/reports" "$out/server.log"
"$out/venv/bin/kosoku" -m fuzzingserver "127.0.0.1:$port" -x '12.*' -x '13.*' -o "$out/reports" \
    >"$out/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -qs listening "$out/server.log" && break
    sleep 0.1
done
grep -qs listening "$out/server.log" || { cat "$out/server.log"; echo "fuzzingserver did not start" >&2; exit 1; }
timeout 170 "$out/debug/tether-autobahn-client" "ws://127.0.0.1:$port" tether
# The fuzzingserver exits once the agent has asked for its report.
for _ in $(seq 100); do kill -0 $server 2>/dev/null || break; sleep 0.1; done
if kill -0 $server 2>/dev/null; then cat "$out/server.log"; echo "fuzzingserver did not exit" >&2; exit 1; fi
wait $server || true
trap - EXIT
cat "$out/server.log"
python3 - "$out/reports/index.json" <<'PY'
import collections, json, sys
cases = json.load(open(sys.argv[1]))["tether"]
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
verdicts = collections.Counter(v["behavior"] for v in cases.values())
closes = collections.Counter(v["behaviorClose"] for v in cases.values())
bad = sorted(k for k, v in cases.items() if v["behavior"] not in ok or v["behaviorClose"] not in ok)
print(f"autobahn: {len(cases)} cases, behavior {dict(verdicts)}, close {dict(closes)}")
if len(cases) < 290 or bad:
    sys.exit(f"autobahn: failing cases: {bad} (of {len(cases)})")
PY
