#!/usr/bin/env python3
"""ping_ack_resume_async: the same flow as ping_ack_resume.py with tether.aio.AsyncClient.

The event loop sleeps on the library's event descriptor; requests are awaited in their own
tasks while ``async for`` walks the events: pongs with their round-trip time and the event
id they acknowledged, the cuts the backend makes, the missed events replayed on resume.

    tether-backend --event-rate 20 --cut-after-events 40 &     # prints its address
    python3 ping_ack_resume_async.py http://127.0.0.1:PORT [seconds] [user] [password]
    python3 ping_ack_resume_async.py --in-process /path/to/libgomuksffi.so DATA_ROOT [seconds]

In-process (the gomuks backend bundled into the process) there are no pings, cuts or resume;
it says so and shows the rest. Each resume's RESUMED event is handled as in the blocking
example (SUCCEEDED: keep the cached state; RESET: drop it, ids start afresh; CAUGHT_UP: keep
it, a catchup follows). Exit status 0 when every buffered event arrived exactly once and in
order, a reset starting afresh, and the client reached CLOSED (in-process: when every request
was answered).
TETHER_LOG_LEVEL=INFO adds the library's log records (attempts, resumes, backoff) on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from typing import List

import tether
from tether.aio import AsyncClient

# The blocking example's helpers: this one differs only in how it drives the client.
from ping_ack_resume import (
    Args,
    Tally,
    parse_args,
    print_resume_state,
    print_stats,
    redacted,
    say_what_does_not_apply,
    setup_logging,
)


async def requester(client: AsyncClient, command: str, tally: Tally) -> None:
    """Sends a request every two seconds, each awaited in its own task."""

    async def one(n: int) -> None:
        body = {"hello": "from asyncio", "n": n}
        print(f"request {n}: {command} {body}")
        tally.asked += 1
        try:
            reply = await client.request(command, body)
            tally.answered += 1
            print(f"response {n}: OK {redacted(reply)}")
        except tether.TetherError as e:
            tally.answered += 1
            print(f"response {n}: {e}")

    tasks: List["asyncio.Task[None]"] = []
    n = 0
    try:
        while True:
            await asyncio.sleep(2.0)
            n += 1
            tasks.append(asyncio.ensure_future(one(n)))
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)


async def run(args: Args) -> int:
    print(f"tether {tether.library_version()} (python binding {tether.__version__}, asyncio)")
    say_what_does_not_apply(args)
    tally = Tally()
    try:
        if args.in_process:
            client = AsyncClient(in_process=args.in_process)
        else:
            client = AsyncClient(
                args.url, username=args.user, password=args.password, ping_interval=1.0
            )
    except tether.TetherError as e:
        print(f"client: {e}", file=sys.stderr)
        return 1
    async with client:
        requests = asyncio.ensure_future(requester(client, args.command, tally))
        async for ev in client.events(timeout=args.seconds):
            tally.handle(ev)
        requests.cancel()
        await asyncio.gather(requests, return_exceptions=True)
        print("closing" if args.in_process else "closing (1000: the backend keeps what a resume needs)")
        # close() waits up to 10 s for CLOSED; the iteration ends with CLOSED, or without it
        # once close() gave up waiting.
        closing = asyncio.ensure_future(client.close(keep_resume=True))
        async for ev in client:  # what was queued before CLOSED, then CLOSED
            tally.handle(ev)
        await closing
        # Read after CLOSED: until then, events delivered during the close still move it.
        print_resume_state(args, client.resume_state() if tally.closed else None)
        print_stats(client.stats())
    return tally.finish(args)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if args is None:
        return 2
    setup_logging()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
