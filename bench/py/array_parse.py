"""Whether handing a batch over as one JSON array could bring a Python consumer to the parse-only
ceiling: the same parser over the same payloads, no socket, three ways, alternating, in one
process.

- per payload: one `loads` per event's `data` (the parse-only ceiling of bench/run.sh);
- one array: one `loads` per run of 256 payloads joined as `[p0,p1,...]`, then a loop over the
  list (the shape the Python binding parses today);
- wrapped: one `loads` per 256 events written as `[[kind,"command",request_id,data],...]`, then
  a loop unpacking each (a batch that carries the event fields too, so no `Event` object nor
  ctypes read per event would be needed).

The payloads are taken from the blaster through the binding first, untimed (stream.py), as
parse_ceiling.py does. Prints one JSON line: events per second of each way (median of the
rounds) and each ratio to per payload.

Usage: array_parse.py URL COMPRESS(0|1) [orjson] [ROUNDS]. Run on demand (not part of run.sh):
start a blaster (`target/release/tether-bench blaster 0 realistic 50000 0 16`) and pass its
`http://127.0.0.1:PORT`.
"""
import json
import statistics
import sys
import time

from stream import collect

BATCH = 256


def main() -> None:
    url, compress = sys.argv[1], sys.argv[2] == "1"
    rest = sys.argv[3:]
    fast = "orjson" in rest
    rounds = int(next((a for a in rest if a.isdigit()), "7"))
    if fast:
        import orjson

        loads = orjson.loads
    else:
        loads = json.loads
    events = collect(url, compress)
    payloads = [p for _, _, p in events]
    chunks = [events[i:i + BATCH] for i in range(0, len(events), BATCH)]
    arrays = [b"[" + b",".join(p for _, _, p in c) + b"]" for c in chunks]
    wrapped = [b"[" + b",".join(b'[1,"%s",%d,%s]' % (cmd.encode(), rid, p) for cmd, rid, p in c) + b"]"
               for c in chunks]

    def per_payload() -> float:
        t = time.perf_counter()
        for p in payloads:
            loads(p)
        return time.perf_counter() - t

    def one_array() -> float:
        t = time.perf_counter()
        for a in arrays:
            for _data in loads(a):
                pass
        return time.perf_counter() - t

    def wrapped_array() -> float:
        t = time.perf_counter()
        for a in wrapped:
            for _kind, _command, _rid, _data in loads(a):
                pass
        return time.perf_counter() - t

    ways = {"per_payload": per_payload, "one_array": one_array, "wrapped": wrapped_array}
    secs = {name: [] for name in ways}
    for _ in range(rounds):
        for name, f in ways.items():
            secs[name].append(f())
    n = len(payloads)
    eps = {name: n / statistics.median(s) for name, s in secs.items()}
    print(json.dumps({
        "parser": "orjson" if fast else "json", "events": n, "rounds": rounds,
        "eps": {k: round(v) for k, v in eps.items()},
        "ratio": {k: round(v / eps["per_payload"], 3) for k, v in eps.items()},
    }))


main()
