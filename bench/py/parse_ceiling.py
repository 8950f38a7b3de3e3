"""The parse-only ceiling of a Python client: the same parser over the same payload bytes in a
tight loop, no socket, no library. The payloads are the events' `data` exactly as the tether
binding hands them over (taken from the blaster through the binding first, untimed); the timed
part is `loads(payload)` for each, which is what every Python client must at least do per event.

Usage: parse_ceiling.py URL COMPRESS(0|1) [orjson].
"""
import json
import sys
import time

import tether


def main() -> None:
    url, compress = sys.argv[1], sys.argv[2] == "1"
    fast = sys.argv[3:] == ["orjson"]
    loads = json.loads
    if fast:
        import orjson

        loads = orjson.loads
    payloads = []
    with tether.Client(url, token="bench-token", compress=compress, allow_insecure_credentials=True,
                       ping_interval=300.0, receive_timeout=600.0) as client:
        for ev in client.events():
            if ev.kind == tether.EventKind.DISCONNECTED:
                raise SystemExit(f"disconnected: {ev.reason}")
            if ev.kind != tether.EventKind.MESSAGE:
                continue
            if ev.command == "bench_end":
                break
            payloads.append(ev.raw)
    payloads = payloads[1:]  # the run_id snapshot is not an event of the stream
    start = time.perf_counter()
    for p in payloads:
        loads(p)
    secs = time.perf_counter() - start
    events = len(payloads)
    name = "python-parse-orjson" if fast else "python-parse"
    print(json.dumps({"client": name, "events": events, "secs": secs, "eps": events / secs}))


main()
