"""The most a Python consumer of tether can get: the C batch API called straight through
ctypes, with no `Event` objects, no queue and no reader thread. Each MESSAGE's command name
(once per batch), request id and payload are read from the batch, the payload parsed where it
lies in the batch buffer (orjson parses a memoryview without a copy; json needs bytes).

Not something an application should write (no routing of replies, no resume bookkeeping
beyond the library's own, no threading): it bounds what any Python delivery shape could reach,
so the binding's rows can be read against it as well as against the parse-only ceiling.

Usage: bare_batch.py URL COMPRESS(0|1) [orjson]. Timed from the first server message to the
end marker.
"""
import ctypes
import time
from ctypes import byref, c_size_t, c_void_p

from common import native_client, report, stream_args
from csw import switches

from tether import EventKind, _ffi

MESSAGE = int(EventKind.MESSAGE)
ENTRY_SIZE = _ffi.BATCH_ENTRY.size


def main() -> None:
    url, compress, fast, loads = stream_args()
    own = not fast  # json.loads takes bytes, not a view
    lib = _ffi.lib
    count, entries, n, data, size = c_size_t(), c_void_p(), c_size_t(), c_void_p(), c_size_t()
    start = csw0 = None
    events = 0
    done = False
    with native_client(url, compress) as (client, batch):
        while not done:
            st = lib.tether_client_poll_batch(client, 10000, batch, byref(count))
            if st != 0:
                raise SystemExit(f"poll_batch: status {st}")
            _ffi.check(lib.tether_batch_view(batch, byref(entries), byref(n), byref(data), byref(size)), "view")
            raw = ctypes.string_at(entries.value, n.value * ENTRY_SIZE)
            buf = memoryview((ctypes.c_char * size.value).from_address(data.value)).cast("B") if size.value else b""
            names = {}
            for rid, off, length, kind, _status, name_at, name_len in _ffi.BATCH_ENTRY_COMMON.iter_unpack(raw):
                if kind != MESSAGE:
                    continue
                if start is None:
                    csw0 = switches()
                    start = time.perf_counter()
                name = names.get(name_at)
                if name is None:
                    name = names[name_at] = bytes(buf[name_at:name_at + name_len]).decode()
                payload = buf[off:off + length]
                loads(payload.tobytes() if own else payload)
                if name == "bench_end":
                    done = True
                    break
                events += 1
        secs = time.perf_counter() - start
        csw = switches() - csw0
    events -= 1  # the run_id snapshot is not an event of the stream
    report("python-bare-orjson" if fast else "python-bare", events, secs, csw)

main()
