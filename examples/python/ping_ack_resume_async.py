#!/usr/bin/env python3
"""ping_ack_resume_async: the same flow as ping_ack_resume.py with tether.aio.AsyncClient.

The event loop sleeps on the library's event descriptor; requests are awaited in their own
tasks while ``async for`` walks the events: pongs with their round-trip time and the event
id they acknowledged, the cuts the backend makes, the missed events replayed on resume.

    tether-backend --event-rate 20 --cut-after-events 40 &     # prints its address
    python3 ping_ack_resume_async.py http://127.0.0.1:PORT [seconds] [user] [password]
    python3 ping_ack_resume_async.py --in-process /path/to/libgomuksffi.so DATA_ROOT [seconds]

In-process (the gomuks backend bundled into the process) there are no pings, cuts or resume;
it says so and shows the rest. Exit status 0 when every buffered event arrived exactly once
and in order (in-process: when every request was answered).
TETHER_LOG_LEVEL=INFO adds the library's log records (attempts, resumes, backoff) on stderr.
"""

from __future__ import annotations

import asyncio
import sys
from typing import List

import tether
from tether import EventKind
from tether.aio import AsyncClient

# The blocking example's helpers: this one differs only in how it drives the client.
from ping_ack_resume import (
    Args,
    parse_args,
    print_resume_state,
    print_stats,
    redacted,
    say_what_does_not_apply,
    setup_logging,
)


class Tally:
    """Checks buffered event ids: each exactly once, in order (ids count down from -1)."""

    def __init__(self) -> None:
        self.last_id = 0
        self.received = self.gaps = self.replayed = self.pongs = self.cuts = self.resumes = 0
        self.asked = self.answered = 0
        self.resuming = False

    def handle(self, ev: tether.Event) -> None:
        if ev.kind == EventKind.CONNECTING:
            print(f"connecting (attempt {ev.attempt})")
        elif ev.kind == EventKind.CONNECTED:
            self.resuming = ev.resume_attempted
            print("connected" + (", resuming after the last received event" if self.resuming else ""))
            if self.resuming:
                self.resumes += 1
                print(f"  resume from event {self.last_id}")
        elif ev.kind == EventKind.DISCONNECTED:
            if ev.status != tether.Status.OK:  # not the close's own
                self.cuts += 1
            status = tether.Status(ev.status).name if ev.status else "OK"
            retry = f"retry in {ev.retry_in_ms} ms" if ev.retry_in_ms is not None else "no retry"
            print(f"disconnected: {status}, close code {ev.close_code}, {ev.reason!r}; {retry}")
        elif ev.kind == EventKind.MESSAGE:
            if ev.id < 0:
                if self.last_id != 0 and ev.id != self.last_id - 1:
                    print(f"  GAP: event {ev.id} after {self.last_id}")
                    self.gaps += 1
                if ev.id < self.last_id or self.last_id == 0:
                    self.last_id = ev.id
                self.received += 1
                if self.resuming:
                    if self.replayed == 0:
                        print(f"  replay starts at event {ev.id}")
                    self.replayed += 1
            elif ev.command == "init_complete" and self.resuming:
                print(
                    f"  replayed {self.replayed} missed events, up to {self.last_id}; "
                    + ("WITH GAPS" if self.gaps else "in order, no gap")
                )
                self.resuming = False
                self.replayed = 0
            else:
                print(f"event {ev.command}")
        elif ev.kind == EventKind.PONG:
            self.pongs += 1
            print(f"pong: rtt {ev.rtt_us} us, acknowledged event {ev.acked_id}")
        elif ev.kind == EventKind.CLOSED:
            print("closed")


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
        closing = asyncio.ensure_future(client.close(keep_resume=True))
        async for ev in client:  # what was queued before CLOSED, then CLOSED
            tally.handle(ev)
        await closing
        print_resume_state(args, client.resume_state())
        print_stats(client.stats())
    print(
        f"summary: {tally.received} events, {tally.gaps} gaps, {tally.cuts} cuts survived, "
        f"{tally.resumes} resumes, {tally.pongs} pongs, "
        f"{tally.answered} of {tally.asked} requests answered"
    )
    if args.in_process:
        return 0 if tally.asked > 0 and tally.answered == tally.asked else 1
    return 0 if tally.gaps == 0 and tally.received > 0 else 1


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if args is None:
        return 2
    setup_logging()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
