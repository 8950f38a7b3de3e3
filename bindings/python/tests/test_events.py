"""RESUMED and TOKEN_RENEWED against a real tether-backend (gomuks-rpc.md §7.2 and §1.2)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, List

import tether
from tether import Client, EventKind, ResumeOutcome
from tether.aio import AsyncClient

from conftest import SLOW, Backend, await_event, gomuks_opts, wait_event


def connected_with_events(backend: Backend, **extra: Any) -> Client:
    """A client that received a few buffered events, so a reconnect asks to resume."""
    c = Client(backend.url, **gomuks_opts(**extra))
    wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
    newest = backend.push(2)
    wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == newest)
    return c


def resumed_before_init_complete(c: Client) -> List[Any]:
    """Events from the resuming CONNECTED up to init_complete; checks RESUMED is among them,
    once, just before init_complete."""
    seen: List[Any] = []
    conn = wait_event(c, lambda e: e.kind == EventKind.CONNECTED, seen=seen)
    assert conn.resume_attempted
    seen = []
    wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete", seen=seen)
    resumed = [e for e in seen if e.kind == EventKind.RESUMED]
    assert len(resumed) == 1, seen
    assert all(e.resume_outcome is None for e in seen if e.kind != EventKind.RESUMED)
    return seen


def test_spec7_2_resume_after_a_cut_reports_succeeded(backend: Backend) -> None:
    with connected_with_events(backend) as c:
        backend.control("/_testkit/cut?push=3")
        seen = resumed_before_init_complete(c)
        ev = seen[-2]
        assert ev.kind == EventKind.RESUMED and ev.resume_outcome == ResumeOutcome.SUCCEEDED
        assert ev.resume_outcome is tether.ResumeOutcome.SUCCEEDED
        assert "SUCCEEDED" in repr(ev)
        assert c.stats().resumes_succeeded == 1


def test_spec7_2_backend_restart_reports_reset(backend: Backend) -> None:
    with connected_with_events(backend) as c:
        backend.control("/_testkit/restart")
        seen = resumed_before_init_complete(c)
        at = next(i for i, e in enumerate(seen) if e.kind == EventKind.RESUMED)
        assert seen[at].resume_outcome == ResumeOutcome.RESET
        # Before the new run_id and the fresh state.
        assert seen[at + 1].command == "run_id"
        assert any(e.command == "sync_complete" and e.data.get("clear_state") for e in seen[at:])


def test_spec7_2_buffer_overrun_reports_reset_in_callback_mode(make_backend: Any) -> None:
    b = make_backend("--buffer-size", "5")
    got: List[Any] = []
    ready = threading.Event()

    def on_event(ev: Any) -> None:
        got.append(ev)
        if ev.kind == EventKind.MESSAGE and ev.command == "init_complete":
            ready.set()

    with Client(b.url, on_event=on_event, **gomuks_opts()) as c:
        assert ready.wait(10 * SLOW)
        newest = b.push(2)
        deadline = time.monotonic() + 10 * SLOW
        while not any(e.id == newest for e in got) and time.monotonic() < deadline:
            time.sleep(0.01)
        b.control("/_testkit/reject_upgrades?n=1000000")
        ready.clear()
        b.control("/_testkit/cut?push=20")
        while not any(e.kind == EventKind.DISCONNECTED for e in got) and time.monotonic() < deadline:
            time.sleep(0.01)
        b.control("/_testkit/reject_upgrades?n=0")
        assert ready.wait(10 * SLOW)
        resumed = [e for e in got if e.kind == EventKind.RESUMED]
        assert [e.resume_outcome for e in resumed] == [ResumeOutcome.RESET]
        assert c.stats().resumes_reset == 1


#: Tokens are renewed halfway through their life, and the backend's expiry is in whole seconds:
#: 2 s leaves half a second for a renewal, too little under valgrind.
SHORT_TOKEN_LIFETIME_MS = str(int(2000 * SLOW))


def test_spec1_2_token_is_renewed_while_connected(make_backend: Any) -> None:
    b = make_backend("--token-lifetime-ms", SHORT_TOKEN_LIFETIME_MS)
    with Client(b.url, **gomuks_opts()) as c:
        first = None
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.TOKEN_RENEWED, seen=seen)
        first = c.auth_token()
        assert first
        for _ in range(2):
            ev = wait_event(c, lambda e: e.kind == EventKind.TOKEN_RENEWED, seen=seen)
            assert ev.raw == b"" and ev.data is None
            assert first not in repr(ev)
        assert c.auth_token() != first
        assert not [e for e in seen if e.kind == EventKind.DISCONNECTED]
        assert b.stats()["token_renewals"] >= 2
        assert b.stats()["total_connections"] == 1


def test_spec1_2_token_renewal_reaches_an_async_client(make_backend: Any) -> None:
    b = make_backend("--token-lifetime-ms", SHORT_TOKEN_LIFETIME_MS)

    async def main() -> None:
        async with AsyncClient(b.url, **gomuks_opts()) as c:
            await await_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
            before = c.auth_token()
            await await_event(c, lambda e: e.kind == EventKind.TOKEN_RENEWED)
            assert c.auth_token() != before

    asyncio.run(asyncio.wait_for(main(), 30 * SLOW))


def test_spec7_2_buffer_overrun_with_last_server_ts_reports_caught_up(make_backend: Any) -> None:
    b = make_backend("--buffer-size", "5")
    with connected_with_events(b, last_server_ts=1_700_000_000_000) as c:
        b.control("/_testkit/reject_upgrades?n=1000000")
        b.control("/_testkit/cut?push=20")
        wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        b.control("/_testkit/reject_upgrades?n=0")
        seen = resumed_before_init_complete(c)
        at = next(i for i, e in enumerate(seen) if e.kind == EventKind.RESUMED)
        assert seen[at].resume_outcome == ResumeOutcome.CAUGHT_UP
        sync = next(e for e in seen[at:] if e.command == "sync_complete")
        assert sync.data.get("catchup") is True and not sync.data.get("clear_state")


def test_the_resume_point_before_held_events_is_just_before_the_first_one() -> None:
    """gomuks-rpc.md §7.2: the binding's resume point leaves out the events it holds for the
    app, and is 0 (start afresh) when what it holds starts a state the app has not seen."""
    from tether._base import before_held
    from tether._options import ResumeState
    from tether.events import Event

    def msg(rid: int, command: str = "x") -> Event:
        return Event(EventKind.MESSAGE, rid, 0, command)

    state = ResumeState("r", -9)
    assert before_held(state, []) == state
    assert before_held(state, [Event(EventKind.PONG, 3)]) == state
    assert before_held(state, [msg(-7), msg(-8), msg(-9)]) == ResumeState("r", -6)
    assert before_held(ResumeState("r", 0), [msg(-1)]) == ResumeState("r", 0)
    # A resume that succeeded continues what the app saw.
    resumed = [
        msg(-7),
        Event(EventKind.CONNECTED, resume_attempted=True),
        msg(0, "run_id"),
        msg(-8),
        Event(EventKind.RESUMED, resume_outcome=ResumeOutcome.SUCCEEDED),
        msg(0, "init_complete"),
        msg(-9),
    ]
    assert before_held(state, resumed) == ResumeState("r", -6)
    # Anything else starts afresh.
    assert before_held(state, [msg(-7), Event(EventKind.CONNECTED)]) == ResumeState("r", 0)
    reset = Event(EventKind.RESUMED, resume_outcome=ResumeOutcome.RESET)
    assert before_held(state, [msg(-7), reset, msg(-9)]) == ResumeState("r", 0)
    # The state of a start (or a catchup, or the room list after a login) is never replayed.
    held = [msg(0, "sync_complete"), msg(0, "init_complete"), msg(-9)]
    assert before_held(state, held) == ResumeState("r", 0)
    # Once the app has it, the rest is replayed.
    assert before_held(state, [msg(-8), msg(0, "init_complete"), msg(-9)]) == ResumeState("r", -7)
