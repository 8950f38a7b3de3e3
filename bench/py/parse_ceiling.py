"""The parse-only ceiling of a Python client: the same parser over the same payload bytes in a
tight loop, no socket, no library. The payloads are the events' `data` exactly as the tether
binding hands them over (taken from the blaster through the binding first, untimed); the timed
part is `loads(payload)` for each, which is what every Python client must at least do per event.

Usage: parse_ceiling.py URL COMPRESS(0|1) [orjson].
"""
import time

from common import report, stream_args
from stream import collect


def main() -> None:
    url, compress, fast, loads = stream_args()
    payloads = [raw for _, _, raw in collect(url, compress)]
    start = time.perf_counter()
    for p in payloads:
        loads(p)
    secs = time.perf_counter() - start
    events = len(payloads)
    name = "python-parse-orjson" if fast else "python-parse"
    report(name, events, secs)


main()
