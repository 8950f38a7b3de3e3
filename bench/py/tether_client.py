"""Python binding throughput client: the blocking client's batch path, each event's JSON parsed.

Usage: tether_client.py URL COMPRESS(0|1) [orjson]. With `orjson`, the client is created with
``json_loads=orjson.loads`` (the binding's ``fast`` extra); otherwise ``data`` uses ``json.loads``.
Timed from the first server message to the end marker.
"""
import time

import tether
from common import report, stream_args
from csw import switches


def main() -> None:
    url, compress, fast, loads = stream_args()
    with tether.Client(url, token="bench-token", compress=compress, allow_insecure_credentials=True,
                       ping_interval=300.0, receive_timeout=600.0, json_loads=loads if fast else None) as client:
        start = None
        events = 0
        for ev in client.events():
            if ev.kind == tether.EventKind.DISCONNECTED:
                raise SystemExit(f"disconnected: {ev.reason}")
            if ev.kind != tether.EventKind.MESSAGE:
                continue
            if start is None:
                csw0 = switches()
                start = time.perf_counter()
            ev.data  # parses the payload, as an application would
            if ev.command == "bench_end":
                break
            events += 1
        secs = time.perf_counter() - start
        csw = switches() - csw0
    events -= 1  # the run_id snapshot is not an event of the stream
    name = "python-tether-orjson" if fast else "python-tether"
    report(name, events, secs, csw)


main()
