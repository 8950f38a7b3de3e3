"""The fastest Python websocket client a user would pick: picows (Cython) + zlib + json
(gomuks-rpc.md §3.2, §5).

Usage: picows_client.py URL COMPRESS(0|1) [orjson]. With `orjson`, each line is parsed with
orjson.loads instead of json.loads. Timed from the first server message to the end marker. The
blaster sends every message as one unfragmented frame, as gomuks does; a fragmented one would
fail the run instead of being measured wrongly.
"""
import asyncio
import time
import zlib

from common import report, stream_args
from csw import switches

from picows import WSListener, WSMsgType, ws_connect


def main() -> None:
    url, compress, fast, loads = stream_args()
    ws_url = url.replace("http://", "ws://") + "/_gomuks/websocket" + ("?compress=1" if compress else "")
    inflater = zlib.decompressobj(-15)
    result = {"events": 0, "start": None, "end": None}

    class Listener(WSListener):
        def on_ws_frame(self, transport, frame) -> None:  # type: ignore[no-untyped-def]
            if result["end"] is not None:
                return
            if not frame.fin:
                raise SystemExit("fragmented frame: not what the blaster sends")
            if result["start"] is None:
                result["csw0"] = switches()
                result["start"] = time.perf_counter()
            if frame.msg_type == WSMsgType.BINARY:
                text = inflater.decompress(frame.get_payload_as_memoryview()).decode()
            elif frame.msg_type == WSMsgType.TEXT:
                text = frame.get_payload_as_utf8_text()
            else:
                return
            for line in text.split("\n"):
                if not line:
                    continue
                env = loads(line)
                if env["command"] == "bench_end":
                    result["end"] = time.perf_counter()
                    result["csw"] = switches() - result["csw0"]
                    transport.disconnect()
                    return
                result["events"] += 1

    async def run() -> None:
        transport, _ = await ws_connect(Listener, ws_url, extra_headers={"Cookie": "gomuks_auth=bench-token"},
                                        max_frame_size=1 << 30)
        await transport.wait_disconnected()

    asyncio.run(run())
    if result["end"] is None or result["start"] is None:
        raise SystemExit("the stream ended before its end marker")
    events = result["events"] - 1  # the run_id snapshot is not an event of the stream
    secs = result["end"] - result["start"]
    name = "python-picows-orjson" if fast else "python-picows"
    report(name, events, secs, result["csw"])


main()
