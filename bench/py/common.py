"""What every throughput client of bench/run.sh shares: its arguments, its one JSON line, and,
for the clients that call tether's C batch straight through ctypes, the native client."""
import contextlib
import json
import sys
from typing import Any, Callable, Iterator, Optional, Tuple


def stream_args() -> Tuple[str, bool, bool, Callable[[Any], Any]]:
    """``URL COMPRESS(0|1) [orjson]``: the URL, whether compressed, whether orjson, the parser."""
    url, compress = sys.argv[1], sys.argv[2] == "1"
    fast = sys.argv[3:] == ["orjson"]
    if fast:
        import orjson

        return url, compress, True, orjson.loads
    return url, compress, False, json.loads


def report(client: str, events: int, secs: float, csw: Optional[int] = None) -> None:
    """Prints the one line run_client records (``csw`` left out where it is not measured)."""
    line = {"client": client, "events": events, "secs": secs, "eps": events / secs}
    if csw is not None:
        line["csw"] = csw
    print(json.dumps(line))


@contextlib.contextmanager
def native_client(url: str, compress: bool) -> Iterator[Tuple[int, int]]:
    """A connected native tether client and a batch of 256 for it, as ``(client, batch)``
    addresses, freed on exit."""
    from tether import _ffi
    from tether._options import build_config

    lib = _ffi.lib
    cfg = build_config(url, token="bench-token", compress=compress, allow_insecure_credentials=True,
                       ping_interval=300.0, receive_timeout=600.0)
    try:
        client = _ffi.new_handle(lib.tether_client_new, cfg)
    finally:
        lib.tether_config_free(cfg)
    batch = _ffi.new_handle(lib.tether_batch_new, 256)
    try:
        _ffi.check(lib.tether_client_connect(client), "connect")
        yield client, batch
    finally:
        lib.tether_batch_free(batch)
        lib.tether_client_close(client)
        lib.tether_client_free(client)
