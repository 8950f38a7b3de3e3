#!/usr/bin/env python3
"""ping_ack_resume: the gomuks keepalive, acknowledgement and resume flow with tether.Client.

Connects to a running tether-backend (or any gomuks backend), sends a request every two
seconds, prints each pong with its round-trip time and the event id it acknowledged, rides
out the cuts the backend makes, shows the events it missed being replayed, and closes
cleanly after the given number of seconds with close code 1000, so the backend keeps the
events a later client resuming from the printed resume state will need.

    tether-backend --event-rate 20 --cut-after-events 40 &     # prints its address
    python3 ping_ack_resume.py http://127.0.0.1:PORT [seconds] [user] [password]

The same program drives the gomuks backend bundled into the process instead (its C FFI,
libgomuksffi, loaded at run time): no socket, so no pings, cuts or resume (it says so), but
the same events, requests and close.

    python3 ping_ack_resume.py --in-process /path/to/libgomuksffi.so DATA_ROOT [seconds]

On each reconnect that asks to resume, the RESUMED event says how it went: SUCCEEDED (the
missed events were replayed, each once), RESET (the backend restarted or lost the resume point:
the cached state is dropped and the fresh state follows) or CAUGHT_UP (only with
``last_server_ts``).

Exit status 0 when every buffered event arrived exactly once and in order, a reset starting
afresh, and the client reached CLOSED (in-process: when every request was answered).
TETHER_LOG_LEVEL=INFO adds the library's log records (attempts, resumes, backoff) on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, List, NamedTuple, Optional, Tuple

import tether
from tether import EventKind, ResumeOutcome


class Args(NamedTuple):
    """What the command line asks for: a websocket URL with credentials, or the in-process
    backend's library and data root."""

    url: Optional[str]
    in_process: Optional[Tuple[str, str]]
    seconds: float
    user: str
    password: str

    @property
    def command(self) -> str:
        # The testkit answers "echo"; the bundled gomuks backend has no such command, but
        # answers the FFI-only get_account_info (null while logged out).
        return "get_account_info" if self.in_process else "echo"


def parse_args(argv: List[str]) -> Optional[Args]:
    """``URL [seconds] [user] [password]`` or ``--in-process LIBRARY ROOT [seconds]``;
    ``None`` (after printing the usage) for anything else."""
    if len(argv) > 1 and argv[1] == "--in-process":
        if len(argv) >= 4:
            seconds = float(argv[4]) if len(argv) > 4 else 10.0
            return Args(None, (argv[2], argv[3]), seconds, "", "")
    elif len(argv) >= 2:
        seconds = float(argv[2]) if len(argv) > 2 else 10.0
        user = argv[3] if len(argv) > 3 else "tether"
        password = argv[4] if len(argv) > 4 else "tether-password"
        return Args(argv[1], None, seconds, user, password)
    print(
        f"usage: {argv[0]} URL [seconds] [user] [password]\n"
        f"       {argv[0]} --in-process LIBGOMUKSFFI DATA_ROOT [seconds]",
        file=sys.stderr,
    )
    return None


def say_what_does_not_apply(args: Args) -> None:
    if args.in_process:
        print(
            "in-process: the gomuks backend runs in this process (no socket), so there are "
            "no pings, cuts or resume to show; events, requests and close work the same"
        )


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if args is None:
        return 2
    setup_logging()
    print(f"tether {tether.library_version()} (python binding {tether.__version__})")
    say_what_does_not_apply(args)

    tally = Tally()
    pending: List[tether.PendingRequest] = []

    def report_responses() -> None:
        for p in [p for p in pending if p.done()]:
            pending.remove(p)
            tally.answered += 1
            try:
                print(f"response {p.id}: OK {redacted(p.result(0))}")
            except tether.TetherError as e:
                print(f"response {p.id}: {e}")

    try:
        client = connect(args)
    except tether.TetherError as e:
        print(f"client: {e}", file=sys.stderr)
        return 1
    end = time.monotonic() + args.seconds
    next_request = time.monotonic() + 2.0
    with client:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_request:
                body = {"hello": "from Python"}
                try:
                    pending.append(client.submit(args.command, body))
                    tally.asked += 1
                    print(f"request {pending[-1].id}: {args.command} {body}")
                except tether.TetherError as e:
                    print(f"request: {e}")
                next_request = now + 2.0
            ev = client.next_event(min(0.2, max(0.0, end - now)))
            if ev is not None:
                tally.handle(ev)
                if tally.closed:
                    break
            report_responses()
        print("closing" if args.in_process else "closing (1000: the backend keeps what a resume needs)")
        client.close(keep_resume=True)  # waits up to 10 s for CLOSED, but may return without it
        for ev in client.events(timeout=5):  # what was queued before CLOSED, then CLOSED
            tally.handle(ev)
        report_responses()
        # Read after CLOSED: until then, events delivered during the close still move it.
        print_resume_state(args, client.resume_state() if tally.closed else None)
        print_stats(client.stats())
    return tally.finish(args)


class Tally:
    """Checks buffered event ids: each exactly once, in order (ids count down from -1), and
    follows what each resume did."""

    def __init__(self) -> None:
        self.last_id = 0  # most recent buffered event id; 0: none since a fresh start
        self.received = self.gaps = self.replayed = self.pongs = self.cuts = 0
        self.resumes = self.resets = self.asked = self.answered = 0
        # Between a CONNECTED that asked to resume and its RESUMED: the events that arrive are
        # the replay if the resume succeeds, the new state if it is reset, so an id that does
        # not follow is only a gap once RESUMED says SUCCEEDED.
        self.resuming = False
        self.unsure = 0
        self.closed = False

    def handle(self, ev: tether.Event) -> None:
        if ev.kind == EventKind.CONNECTING:
            print(f"connecting (attempt {ev.attempt})")
        elif ev.kind == EventKind.CONNECTED:
            self.resuming = ev.resume_attempted
            self.replayed = 0
            print("connected" + (", resuming after the last received event" if self.resuming else ""))
            if self.resuming:
                self.resumes += 1
                print(f"  resume from event {self.last_id}")
            else:
                self.last_id = 0  # no resume asked: the backend sends its state afresh
        elif ev.kind == EventKind.RESUMED:
            # Once per connection that asked to resume, before the message that decided it.
            self.resumed(ev.resume_outcome)
        elif ev.kind == EventKind.DISCONNECTED:
            if ev.retry_in_ms is not None:  # not the close's own, nor a refused login
                self.cuts += 1
            status = tether.Status(ev.status).name if ev.status else "OK"
            retry = f"retry in {ev.retry_in_ms} ms" if ev.retry_in_ms is not None else "no retry"
            print(f"disconnected: {status}, close code {ev.close_code}, {ev.reason!r}; {retry}")
        elif ev.kind == EventKind.MESSAGE:
            if ev.id < 0:
                self.buffered(ev.id)
            else:
                print(f"event {ev.command}")
        elif ev.kind == EventKind.PONG:
            self.pongs += 1
            print(f"pong: rtt {ev.rtt_us} us, acknowledged event {ev.acked_id}")
        elif ev.kind == EventKind.CLOSED:
            self.closed = True
            print("closed")

    def buffered(self, event_id: int) -> None:
        if self.last_id != 0 and event_id != self.last_id - 1:
            if self.resuming:
                print(f"  event {event_id} after {self.last_id}: a gap unless the resume was reset")
                self.unsure += 1
            else:
                print(f"  GAP: event {event_id} after {self.last_id}")
                self.gaps += 1
        if event_id < self.last_id or self.last_id == 0:
            self.last_id = event_id
        self.received += 1
        if self.resuming:
            if self.replayed == 0:
                print(f"  replay starts at event {event_id}")
            self.replayed += 1

    def resumed(self, outcome: Optional[ResumeOutcome]) -> None:
        if outcome == ResumeOutcome.SUCCEEDED:
            # The missed events arrived just before, each once: keep the cached state.
            self.gaps += self.unsure
            print(
                f"  RESUMED SUCCEEDED: replayed {self.replayed} missed events, "
                f"up to {self.last_id}; " + ("WITH GAPS" if self.gaps else "in order, no gap")
            )
        elif outcome == ResumeOutcome.RESET:
            # The backend restarted or no longer held the resume point: the missed events are
            # gone and its state comes afresh (a new run's ids start again at -1).
            self.resets += 1
            print("  RESUMED RESET: drop the cached state; the fresh state follows")
            self.last_id = 0
        elif outcome == ResumeOutcome.CAUGHT_UP:
            # Only with last_server_ts: the missed events are gone, but a sync_complete with
            # catchup brings the cached state up to date.
            print("  RESUMED CAUGHT_UP: keep the cached state; a catchup sync_complete follows")
            self.last_id = 0
        self.resuming = False
        self.unsure = 0

    def finish(self, args: Args) -> int:
        """Prints the summary; returns the exit status."""
        print(
            f"summary: {self.received} events, {self.gaps} gaps, {self.cuts} cuts survived, "
            f"{self.resumes} resumes, {self.resets} resets, {self.pongs} pongs, "
            f"{self.answered} of {self.asked} requests answered"
        )
        if args.in_process:
            return 0 if self.closed and self.asked > 0 and self.answered == self.asked else 1
        return 0 if self.closed and self.gaps == 0 and self.received > 0 else 1


def redacted(reply: Any) -> Any:
    """get_account_info (in-process) carries the Matrix access token: never print it."""
    if isinstance(reply, dict) and "access_token" in reply:
        return {**reply, "access_token": "<redacted>"}
    return reply


def connect(args: Args) -> tether.Client:
    if args.in_process:
        return tether.Client(in_process=args.in_process)
    return tether.Client(
        args.url, username=args.user, password=args.password, ping_interval=1.0
    )


def print_resume_state(args: Args, state: Optional[tether.ResumeState]) -> None:
    """The point to persist, read after CLOSED; ``None`` when CLOSED did not come."""
    if args.in_process:
        print("resume state: none in-process (no event buffer, nothing to resume)")
    elif state is None:
        print(
            "resume state not persisted: read before CLOSED it may be behind "
            "(a later client would get some events twice)"
        )
    else:
        print(f"resume state to persist: run_id {state.run_id}, last event {state.last_event_id}")


def print_stats(s: tether.Stats) -> None:
    """The library's counters for the whole run (stats() after close keeps the last ones)."""
    saved = 1 - s.wire_bytes_in / s.payload_bytes_in if s.payload_bytes_in else 0.0
    rtt = f"{s.last_rtt * 1000:.1f} ms" if s.last_rtt is not None else "none"
    print(
        f"stats: {s.connections} connections in {s.connect_attempts} attempts, "
        f"{s.resumes_succeeded} resumed, {s.events_received} events in "
        f"{s.messages_received} messages, {s.wire_bytes_in} bytes in (compression saved "
        f"{saved:.0%}), {s.requests_sent} requests, last rtt {rtt}"
    )


def setup_logging() -> None:
    """The library's records on stderr, at TETHER_LOG_LEVEL (default WARNING: retries and
    failures; INFO shows each connection's life, DEBUG its steps)."""
    logging.basicConfig(
        level=os.environ.get("TETHER_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s [client %(tether_client)s] %(message)s",
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
