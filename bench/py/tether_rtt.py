"""Python binding round trip: COUNT blocking `request("echo", …)` calls, one at a time.

Usage: tether_rtt.py URL COUNT. Prints p50/p99 in microseconds.
"""
import json
import sys
import time

import tether


def main() -> None:
    url, count = sys.argv[1], int(sys.argv[2])
    with tether.Client(url, token="bench-token", compress=False, allow_insecure_credentials=True,
                       ping_interval=300.0, receive_timeout=600.0) as client:
        client.wait_connected(10)
        samples = []
        for i in range(count):
            t = time.perf_counter()
            client.request("echo", {"n": i})
            samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    pct = lambda p: samples[round((len(samples) - 1) * p)]  # noqa: E731
    print(json.dumps({"client": "python", "n": count, "p50_us": round(pct(0.5), 1), "p99_us": round(pct(0.99), 1)}))


main()
