"""The blaster's stream as the tether binding hands it over, taken untimed for the benchmarks
that time something else over the same events (parse_ceiling.py, array_parse.py)."""
import tether


def collect(url: str, compress: bool) -> list:
    """`(command, request_id, raw)` of every MESSAGE up to the end marker, without the run_id
    snapshot (not an event of the stream)."""
    out = []
    with tether.Client(url, token="bench-token", compress=compress, allow_insecure_credentials=True,
                       ping_interval=300.0, receive_timeout=600.0) as client:
        for ev in client.events():
            if ev.kind == tether.EventKind.DISCONNECTED:
                raise SystemExit(f"disconnected: {ev.reason}")
            if ev.kind != tether.EventKind.MESSAGE:
                continue
            if ev.command == "bench_end":
                break
            out.append((ev.command, ev.request_id, ev.raw))
    return out[1:]
