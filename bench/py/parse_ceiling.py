"""The parse-only ceiling of a Python client: the same parser over the same payload bytes in a
tight loop, no socket, no library. The payloads are the events' `data` exactly as the tether
binding hands them over (taken from the blaster through the binding first, untimed); the timed
part is `loads(payload)` for each, which is what every Python client must at least do per event.

Usage: parse_ceiling.py URL COMPRESS(0|1) [orjson].
"""
import json
import sys
import time

from stream import collect


def main() -> None:
    url, compress = sys.argv[1], sys.argv[2] == "1"
    fast = sys.argv[3:] == ["orjson"]
    loads = json.loads
    if fast:
        import orjson

        loads = orjson.loads
    payloads = [raw for _, _, raw in collect(url, compress)]
    start = time.perf_counter()
    for p in payloads:
        loads(p)
    secs = time.perf_counter() - start
    events = len(payloads)
    name = "python-parse-orjson" if fast else "python-parse"
    print(json.dumps({"client": name, "events": events, "secs": secs, "eps": events / secs}))


main()
