"""What a Python user would otherwise write: `websockets` + zlib + json (gomuks-rpc.md §3.2, §5).

Usage: websockets_client.py URL COMPRESS(0|1) [orjson]. With `orjson`, each line is parsed with
orjson.loads instead of json.loads. Timed from the first server message to the end marker.
"""
import asyncio
import time
import zlib

import websockets

from common import report, stream_args
from csw import switches


async def main() -> None:
    url, compress, fast, loads = stream_args()
    ws_url = url.replace("http://", "ws://") + "/_gomuks/websocket" + ("?compress=1" if compress else "")
    inflater = zlib.decompressobj(-15)
    async with websockets.connect(ws_url, additional_headers={"Cookie": "gomuks_auth=bench-token"},
                                  max_size=None, compression=None) as ws:
        start = None
        events = 0
        done = False
        async for msg in ws:
            if start is None:
                csw0 = switches()
                start = time.perf_counter()
            if isinstance(msg, bytes):
                msg = inflater.decompress(msg).decode()
            for line in msg.split("\n"):
                if not line:
                    continue
                env = loads(line)
                if env["command"] == "bench_end":
                    done = True
                    break
                events += 1
            if done:
                break
        secs = time.perf_counter() - start
        csw = switches() - csw0
    events -= 1
    name = "python-websockets-orjson" if fast else "python-websockets"
    report(name, events, secs, csw)


asyncio.run(main())
