"""The bound of any Python delivery shape built in native code: bench/py/native_take.c (built
by bench/bound.sh) takes each batch and returns its MESSAGE payloads as bytes; this loop only
parses them. No Event objects, queue, reader thread or routing of replies.

Usage: native_take_client.py URL COMPRESS(0|1) [orjson], with bench/out on PYTHONPATH. Timed
from the first batch that holds a MESSAGE to the end marker.
"""
import time

import native_take
from common import native_client, report, stream_args
from csw import switches


def main() -> None:
    url, compress, fast, loads = stream_args()
    start = csw0 = None
    events = 0
    ended = False
    with native_client(url, compress) as (client, batch):
        while not ended:
            payloads, ended = native_take.take(client, batch, 10000, "bench_end")
            if start is None and payloads:
                csw0 = switches()
                start = time.perf_counter()
            for p in payloads:
                loads(p)
            events += len(payloads)
        secs = time.perf_counter() - start
        csw = switches() - csw0
    events -= 1  # the run_id snapshot is not an event of the stream
    report("python-native-take-orjson" if fast else "python-native-take", events, secs, csw)

main()
