#!/usr/bin/env python3
"""ping_ack_resume: the gomuks keepalive, acknowledgement and resume flow with tether.Client.

Connects to a running tether-backend (or any gomuks backend), sends a request every two
seconds, prints each pong with its round-trip time and the event id it acknowledged, rides
out the cuts the backend makes, shows the events it missed being replayed, and closes
cleanly (close code 1001) after the given number of seconds.

    tether-backend --event-rate 20 --cut-after-events 40 &     # prints its address
    python3 ping_ack_resume.py http://127.0.0.1:PORT [seconds] [user] [password]

Exit status 0 when every buffered event arrived exactly once and in order.
TETHER_LOG_LEVEL=INFO adds the library's log records (attempts, resumes, backoff) on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import List

import tether
from tether import EventKind


def main(argv: List[str]) -> int:
    if len(argv) < 2:
        print(f"usage: {argv[0]} URL [seconds] [user] [password]", file=sys.stderr)
        return 2
    setup_logging()
    url = argv[1]
    seconds = float(argv[2]) if len(argv) > 2 else 10.0
    user = argv[3] if len(argv) > 3 else "tether"
    password = argv[4] if len(argv) > 4 else "tether-password"
    print(f"tether {tether.library_version()} (python binding {tether.__version__})")

    last_id = 0  # most recent buffered event id (negative)
    received = gaps = replayed = pongs = cuts = resumes = 0
    resuming = False
    pending: List[tether.PendingRequest] = []

    def handle(ev: tether.Event) -> None:
        nonlocal last_id, received, gaps, replayed, pongs, cuts, resumes, resuming
        if ev.kind == EventKind.CONNECTING:
            print(f"connecting (attempt {ev.attempt})")
        elif ev.kind == EventKind.CONNECTED:
            resuming = ev.resume_attempted
            print("connected" + (", resuming after the last received event" if resuming else ""))
            if resuming:
                resumes += 1
                print(f"  resume from event {last_id}")
        elif ev.kind == EventKind.DISCONNECTED:
            cuts += 1
            status = tether.Status(ev.status).name if ev.status else "OK"
            retry = f"retry in {ev.retry_in_ms} ms" if ev.retry_in_ms is not None else "no retry"
            print(f"disconnected: {status}, close code {ev.close_code}, {ev.reason!r}; {retry}")
        elif ev.kind == EventKind.MESSAGE:
            if ev.id < 0:
                if last_id != 0 and ev.id != last_id - 1:
                    print(f"  GAP: event {ev.id} after {last_id}")
                    gaps += 1
                if ev.id < last_id or last_id == 0:
                    last_id = ev.id
                received += 1
                if resuming:
                    if replayed == 0:
                        print(f"  replay starts at event {ev.id}")
                    replayed += 1
            elif ev.command == "init_complete" and resuming:
                # The backend sends what was missed before init_complete.
                print(
                    f"  replayed {replayed} missed events, up to {last_id}; "
                    + ("WITH GAPS" if gaps else "in order, no gap")
                )
                resuming = False
                replayed = 0
            else:
                print(f"event {ev.command}")
        elif ev.kind == EventKind.PONG:
            pongs += 1
            print(f"pong: rtt {ev.rtt_us} us, acknowledged event {ev.acked_id}")
        elif ev.kind == EventKind.CLOSED:
            print("closed")

    def report_responses() -> None:
        for p in [p for p in pending if p.done()]:
            pending.remove(p)
            try:
                print(f"response {p.id}: OK {p.result(0)}")
            except tether.TetherError as e:
                print(f"response {p.id}: {e}")

    try:
        client = tether.Client(url, username=user, password=password, ping_interval=1.0)
    except tether.TetherError as e:
        print(f"client: {e}", file=sys.stderr)
        return 1
    end = time.monotonic() + seconds
    next_request = time.monotonic() + 2.0
    with client:
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_request:
                body = {"hello": "from Python"}
                try:
                    pending.append(client.submit("echo", body))
                    print(f"request {pending[-1].id}: echo {body}")
                except tether.TetherError as e:
                    print(f"request: {e}")
                next_request = now + 2.0
            ev = client.next_event(min(0.2, max(0.0, end - now)))
            if ev is not None:
                handle(ev)
                if ev.kind == EventKind.CLOSED:
                    break
            report_responses()
        print("closing (1001)")
        client.close()
        for ev in client.events(timeout=5):  # what was queued before CLOSED, then CLOSED
            handle(ev)
        report_responses()
        state = client.resume_state()
        print(f"resume state to persist: run_id {state.run_id}, last event {state.last_event_id}")
        print_stats(client.stats())
    print(
        f"summary: {received} events, {gaps} gaps, {cuts} cuts survived, "
        f"{resumes} resumes, {pongs} pongs"
    )
    return 0 if gaps == 0 and received > 0 else 1


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
