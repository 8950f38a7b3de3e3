"""tether.store: the native gomuks store through the Python binding, against a real
tether-backend seeded with its room model (``--rooms 6 --history 23``: rooms !r0..!r5 named
"Room i", higher i more recently active; a space !space with children !r1 and !r2; !r0 a DM
with Alice; !r3 a favourite; !r2 with 3 unread messages; an invite !invite)."""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, List

import pytest

import tether
from tether import EventKind, ResumeOutcome, Status
from tether.aio import AsyncClient
from tether.store import READS, AsyncStore, ChangeStream, Store

from conftest import SLOW, Backend, await_event, gomuks_opts, wait_event

ME, ALICE, BOB = "@me:example.org", "@alice:example.org", "@bob:example.org"
R = [f"!r{i}:example.org" for i in range(6)]
SPACE, INVITE = "!space:example.org", "!invite:example.org"
HISTORY = 23


@pytest.fixture
def rooms(make_backend: Callable[..., Backend]) -> Backend:
    """A fresh seeded backend per test: the tests change its rooms."""
    return make_backend("--rooms", "6", "--history", str(HISTORY))


def store_client(backend: Backend, **extra: Any) -> tether.Client:
    """A client with a store, after ``init_complete`` (the initial sync applied)."""
    c = tether.Client(backend.url, store=True, **gomuks_opts(**extra))
    if extra.get("on_event") is None:
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
    return c


def remote_message(backend: Backend, room: str, body: str, sender: str = ALICE) -> Dict[str, Any]:
    q = urllib.parse.urlencode({"room": room, "sender": sender, "body": body})
    return backend.control(f"/_testkit/rooms/message?{q}")  # type: ignore[no-any-return]


def wait_change(
    stream: ChangeStream, pred: Callable[[Dict[str, Any]], bool], timeout: float = 10.0
) -> Dict[str, Any]:
    """Reads change sets from ``stream`` until ``pred(change)``; fails after ``timeout``."""
    deadline = time.monotonic() + timeout * SLOW
    seen: List[Dict[str, Any]] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no matching change within {timeout} s; saw {seen[-10:]}")
        ch = stream.get(left)
        if ch is None:
            continue
        seen.append(ch)
        if pred(ch):
            return ch


def wait_until(pred: Callable[[], bool], stream: ChangeStream, timeout: float = 10.0) -> None:
    """Waits, taking change sets, until ``pred()`` (a read of the store) holds."""
    deadline = time.monotonic() + timeout * SLOW
    while not pred():
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"the store never got there within {timeout} s")
        stream.get(min(left, 0.5))


def drained(stream: ChangeStream) -> List[Dict[str, Any]]:
    """The change sets the stream holds now, without waiting."""
    out = []
    while stream.pending():
        ch = stream.get(0)
        if ch is not None:
            out.append(ch)
    return out


def ids(listing: Dict[str, Any]) -> List[str]:
    return [r["room_id"] for r in listing["rooms"]]


def bodies(timeline: Dict[str, Any]) -> List[str]:
    return [i["event"]["content"]["body"] for i in timeline["events"]]


def test_room_list_after_the_initial_sync_orders_and_filters(rooms: Backend) -> None:
    """The room list after the initial sync: the invite on top, then the favourite, then by
    activity; the space is not listed; favourites_first=False, the dms, space, unreads and
    orphans filters, a query, order by name, invites=False and a limit with its total."""
    with store_client(rooms) as c:
        s = c.store
        listing = s.room_list()
        assert ids(listing) == [INVITE, R[3], R[5], R[4], R[2], R[1], R[0]]
        assert SPACE not in ids(listing)
        first = listing["rooms"][0]
        assert first["invite"] and first["name"] == "Invite room"
        assert listing["rooms"][1]["favourite"] and listing["rooms"][1]["name"] == "Room 3"
        assert listing["total"] == 7 and listing["gen"] == s.session()["gen"]
        assert ids(s.room_list(favourites_first=False)) == [INVITE, R[5], R[4], R[3], R[2], R[1], R[0]]
        assert ids(s.room_list(space="dms")) == [R[0]]
        assert s.room_list(space="dms")["rooms"][0]["dm_user_id"] == ALICE
        assert ids(s.room_list(space=SPACE)) == [R[2], R[1]]
        assert ids(s.room_list(space="unreads")) == [INVITE, R[2]]
        assert s.room_list(space="unreads")["rooms"][1]["unread_messages"] == 3
        assert ids(s.room_list(space="orphans", invites=False)) == [R[3], R[5], R[4]]  # the DM is in "dms"
        assert ids(s.room_list(query="room 4")) == [R[4]]
        assert ids(s.room_list(query="R2:EXAMPLE")) == [R[2]]
        assert ids(s.room_list(order="name", invites=False, favourites_first=False)) == R
        short = s.room_list(invites=False, limit=2)
        assert ids(short) == [R[3], R[5]] and short["total"] == 6
        spaces = s.spaces()
        assert spaces["top_level"] == [SPACE]
        assert spaces["spaces"][SPACE]["children"] == [R[1], R[2]]
        assert s.session()["init_complete"] is True
        assert s.room(R[1])["meta"]["name"] == "Room 1"
        assert s.room(INVITE)["invite"]["room_id"] == INVITE
        assert s.account_data("m.tag", room_id=R[3])["content"]["tags"] == {"m.favourite": {}}
        assert "m.push_rules" in s.account_data()


def test_a_remote_message_is_announced_and_moves_its_room_to_the_top(rooms: Backend) -> None:
    """A message from Alice (HTTP control) arrives: a change set names the room with the new
    event appended and its meta changed; the room moves to the top of the activity order,
    its unread count grows, and the timeline and the preview show the message."""
    with store_client(rooms) as c:
        s = c.store
        with s.changes() as stream:
            sent = remote_message(rooms, R[1], "hello from alice")
            ch = wait_change(stream, lambda ch: R[1] in ch.get("rooms", {}))
        rc = ch["rooms"][R[1]]
        assert rc["appended"] == [sent["rowid"]], ch
        assert rc.get("meta") is True and ch.get("room_list") is True
        assert ch["cause"]["command"] == "sync_complete"
        assert ids(s.room_list(favourites_first=False, invites=False))[0] == R[1]
        assert ids(s.room_list())[:3] == [INVITE, R[3], R[1]]
        entry = s.room(R[1])["entry"]
        assert entry["unread_messages"] == 1
        assert entry["preview"]["content"]["body"] == "hello from alice"
        tl = s.timeline(R[1])
        assert bodies(tl)[-1] == "hello from alice"
        assert tl["events"][-1]["timeline_rowid"] == sent["timeline_rowid"]
        ev = s.event(R[1], rowid=sent["rowid"])
        assert ev["event"]["sender"] == ALICE
        assert s.event(R[1], event_id=ev["event"]["event_id"])["event"]["rowid"] == sent["rowid"]


def test_store_events_reach_subscribers_first_and_stay_in_events(rooms: Backend) -> None:
    """The rule for STORE events: each is an ordinary event of the client (events()), right
    after the MESSAGE it reflects, and its change set reaches on_change callbacks and
    changes() streams before the app can take it from events()."""
    with store_client(rooms) as c:
        s = c.store
        called: List[int] = []
        remove = s.on_change(lambda ch: called.append(ch["gen"]))
        stream = s.changes()
        remote_message(rooms, R[4], "rule check")
        seen: List[Any] = []
        ev = wait_event(
            c,
            lambda e: e.kind == EventKind.STORE and R[4] in e.data.get("rooms", {}),
            seen=seen,
        )
        gen = ev.data["gen"]
        assert ev.command == "" and ev.id == 0 and ev.status == Status.OK
        assert seen[-2].kind == EventKind.MESSAGE and seen[-2].command == "sync_complete"
        assert gen in called  # the callback ran before the event could be taken
        assert any(ch["gen"] == gen for ch in drained(stream))
        remove()
        stream.close()
        remote_message(rooms, R[4], "after unsubscribing")
        ev = wait_event(c, lambda e: e.kind == EventKind.STORE and R[4] in e.data.get("rooms", {}))
        assert ev.data["gen"] not in called and stream.get(0) is None
    # A client without a store has no STORE events and no store.
    with tether.Client(rooms.url, **gomuks_opts()) as plain:
        seen = []
        wait_event(plain, lambda e: e.command == "init_complete", seen=seen)
        assert all(e.kind != EventKind.STORE for e in seen)
        with pytest.raises(tether.StateError, match="store=True"):
            plain.store


def test_in_poll_mode_a_wait_inside_on_change_raises_instead_of_waiting_for_itself(
    rooms: Backend,
) -> None:
    """on_change runs on the app thread that is taking events (here the one in
    wait_event): waiting there for a change or a reply raises StateError, as in callback
    mode, instead of waiting forever; a look without waiting still works."""
    with store_client(rooms) as c:
        s = c.store
        outcomes: List[Any] = []
        stream = s.changes()

        def on_change(ch: Dict[str, Any]) -> None:
            if threading.get_ident() != main or outcomes:
                return  # delivered by the reader thread (not the case under test), or done
            while stream.get(0) is not None:  # no wait: fine
                pass
            for wait in (lambda: stream.get(5 * SLOW), lambda: c.request("echo", {})):
                try:
                    wait()
                    outcomes.append("returned")
                except tether.StateError as e:
                    outcomes.append(str(e))

        main = threading.get_ident()
        s.on_change(on_change)
        deadline = time.monotonic() + 20 * SLOW
        while not outcomes:
            assert time.monotonic() < deadline, "no change set was delivered on this thread"
            remote_message(rooms, R[2], "delivered here")
            wait_event(c, lambda e: e.kind == EventKind.STORE)
        assert len(outcomes) == 2 and all("on_change" in o for o in outcomes), outcomes
        stream.close()


def test_close_inside_on_change_on_the_taking_thread_returns_at_once(rooms: Backend) -> None:
    """close() inside on_change, on the app thread that is taking events, cannot wait for
    CLOSED (this thread delivers it once on_change returns): it returns at once, and the
    events() loop then ends with CLOSED, the client freed."""
    c = store_client(rooms)
    took: List[float] = []
    main = threading.get_ident()

    def on_change(ch: Dict[str, Any]) -> None:
        if threading.get_ident() != main or took:
            return
        t0 = time.monotonic()
        c.close(timeout=None)
        took.append(time.monotonic() - t0)

    c.store.on_change(on_change)
    deadline = time.monotonic() + 20 * SLOW
    kinds = []
    while not took:
        assert time.monotonic() < deadline, "no change set was delivered on this thread"
        remote_message(rooms, R[2], "close from here")
        for ev in c.events(timeout=SLOW):
            kinds.append(ev.kind)
            if took or ev.kind == EventKind.STORE:
                break
    assert took[0] < SLOW, took
    for ev in c.events(timeout=10 * SLOW):
        kinds.append(ev.kind)
    assert kinds[-1] == EventKind.CLOSED, kinds


def test_on_the_reader_thread_a_request_inside_on_change_raises(rooms: Backend) -> None:
    """While no app thread waits, the binding's reader thread delivers, and on_change runs
    there: a request() inside it raises StateError rather than waiting for its own reply."""
    with store_client(rooms) as c:
        outcomes: List[str] = []
        reader = threading.Event()

        def on_change(ch: Dict[str, Any]) -> None:
            if threading.get_ident() == main or outcomes:
                return
            try:
                c.request("echo", {})
                outcomes.append("returned")
            except tether.StateError as e:
                outcomes.append(str(e))
            reader.set()

        main = threading.get_ident()
        c.store.on_change(on_change)
        remote_message(rooms, R[3], "delivered by the reader")
        assert reader.wait(10 * SLOW), "no change set was delivered by the reader thread"
        assert len(outcomes) == 1 and "on_change" in outcomes[0], outcomes


def test_system_exit_raised_by_on_change_loses_no_event(rooms: Backend) -> None:
    """gomuks-rpc.md §4 (every server event reaches the app once, in order), with an
    on_change that calls sys.exit(). On the app thread taking events, SystemExit comes out of
    events() once the whole batch is queued, and the next events() call goes on with the rest;
    on the binding's reader thread it is logged and delivery goes on. No event id is skipped
    either way."""
    with store_client(rooms) as c:
        raised_on: List[int] = []

        def on_change(ch: Dict[str, Any]) -> None:
            raised_on.append(threading.get_ident())
            sys.exit(3)

        c.store.on_change(on_change)
        main = threading.get_ident()
        newest: List[int] = []

        def push() -> None:
            # Room messages (each a STORE event), and generated events behind each in the
            # same batches; a pause now and then lets the reader thread deliver some.
            for i in range(12):
                remote_message(rooms, R[2], f"exit {i}")
                newest.append(rooms.push(40))
                if i % 4 == 3:
                    time.sleep(0.3)

        pusher = threading.Thread(target=push)
        pusher.start()
        seen: List[int] = []
        exits = 0
        deadline = time.monotonic() + 30 * SLOW
        while not newest or len(newest) < 12 or not seen or min(seen) > newest[-1]:
            assert time.monotonic() < deadline, f"events stopped at {min(seen, default=0)}"
            try:
                for ev in c.events(timeout=0.5):
                    if ev.kind == EventKind.MESSAGE and ev.request_id < 0:
                        seen.append(ev.request_id)
                    if not pusher.is_alive() and newest and seen and min(seen) <= newest[-1]:
                        break
                    if len(seen) % 97 == 0:
                        time.sleep(0.1)  # not waiting now: the reader thread takes over
            except SystemExit as e:
                assert e.code == 3
                exits += 1
        pusher.join()
        first = max(seen)
        assert seen == list(range(first, newest[-1] - 1, -1)), "an event was lost or repeated"
        assert exits >= 1 and main in raised_on, "no SystemExit on the app thread"
        assert any(t != main for t in raised_on), "no change set on the reader thread"
        assert c.request("echo", {"still": "delivering"}) == {"still": "delivering"}


def test_a_json_loads_that_fails_on_a_change_set_loses_no_event(rooms: Backend) -> None:
    """The app's json_loads raising on a change set (an on_change callback wants it parsed)
    costs the callbacks that change set only: it is logged, and the client goes on
    delivering, replies included."""
    calls = []

    def picky(raw: Any) -> Any:
        if b'"cause"' in bytes(raw):
            raise ValueError("no change sets here")
        return json.loads(raw)

    with store_client(rooms, json_loads=picky) as c:
        c.store.on_change(calls.append)
        remote_message(rooms, R[1], "parse me")
        wait_event(c, lambda e: e.kind == EventKind.STORE)
        assert c.request("echo", {"still": "here"}) == {"still": "here"}
        assert calls == []


def test_in_callback_mode_on_change_runs_before_on_event_gets_the_store_event(
    rooms: Backend,
) -> None:
    """With on_event, on_change runs on the dispatcher thread right before on_event receives
    the same STORE event; every change set reaches both, in order."""
    log: List[Any] = []
    done = threading.Event()

    def on_event(ev: Any) -> None:
        if ev.kind == EventKind.STORE:
            log.append(("event", ev.data["gen"], threading.get_ident()))
            if R[5] in ev.data.get("rooms", {}):
                done.set()

    c = tether.Client(rooms.url, store=True, on_event=on_event, **gomuks_opts())
    try:
        c.store.on_change(lambda ch: log.append(("change", ch["gen"], threading.get_ident())))
        c.wait_connected(10 * SLOW)
        deadline = time.monotonic() + 10 * SLOW
        while not c.store.session()["init_complete"] and time.monotonic() < deadline:
            time.sleep(0.01)
        remote_message(rooms, R[5], "callback mode")
        assert done.wait(10 * SLOW)
        gens = [g for kind, g, _ in log if kind == "event"]
        assert gens == sorted(gens)
        for i, (kind, gen, thread) in enumerate(log):
            if kind == "event" and any(g == gen for k, g, _ in log if k == "change"):
                assert log[i - 1] == ("change", gen, thread)
        assert sum(1 for k, *_ in log if k == "change") >= 1
    finally:
        c.close()


def test_paginate_until_the_start_pages_ordered_and_disjoint(rooms: Backend) -> None:
    """paginate() loads pages of 10 until has_more is false: every page is older than the one
    before and shares no row with it, the timeline ends up with all 23 rows oldest first,
    and each reply arrives after the store applied the page and announced it (the change set
    is delivered, and the reply not yet, when on_change runs)."""
    with store_client(rooms) as c:
        s = c.store
        core = c._core
        order: List[Any] = []

        def on_change(ch: Dict[str, Any]) -> None:
            rid = ch["cause"].get("request_id")
            if rid:
                p = core.pending.get(rid)
                order.append((rid, rid in core.orphans, p is not None and p.done(),
                              len(s.timeline(R[1], limit=100)["events"])))

        s.on_change(on_change)
        stream = s.changes()
        assert s.timeline(R[1])["events"] == [] and s.timeline(R[1])["has_more"] is True
        pages: List[List[int]] = []
        while True:
            p = s.paginate(R[1], 10)
            reply = p.result(10 * SLOW)
            page = [e["timeline_rowid"] for e in reply["events"]]
            pages.append(page)
            assert page == sorted(page, reverse=True)  # newest first, as gomuks sends it
            if len(pages) > 1:
                assert max(page) < min(pages[-2])
            changes = [ch for ch in drained(stream) if ch["cause"].get("request_id") == p.id]
            assert len(changes) == 1, "the change set was delivered before the reply"
            rc = changes[0]["rooms"][R[1]]
            # History is prepended, the first page into an empty timeline too.
            assert rc["prepended"] == len(page) and "appended" not in rc
            rid, orphan, resolved, rows = order[-1]
            assert rid == p.id and not orphan and not resolved
            assert rows == sum(len(x) for x in pages)
            if not reply["has_more"]:
                break
            assert len(pages) < 5
        assert [len(x) for x in pages] == [10, 10, 3]
        all_rows = [r for page in pages for r in page]
        assert len(set(all_rows)) == HISTORY
        tl = s.timeline(R[1], limit=100)
        assert [e["timeline_rowid"] for e in tl["events"]] == sorted(all_rows)
        assert bodies(tl)[0] == "Message 0 in Room 1" and bodies(tl)[-1] == "Message 22 in Room 1"
        assert tl["has_more"] is False and tl["paginating"] is False
        # Reading in pages from the store: before= the oldest row of the page after.
        newest = s.timeline(R[1], limit=5)
        older = s.timeline(R[1], before=newest["oldest"], limit=5)
        assert bodies(older) == [f"Message {i} in Room 1" for i in range(13, 18)]
        assert older["pending"] == []


def test_only_one_pagination_per_room_runs_at_a_time(rooms: Backend) -> None:
    """A second paginate() of a room while one runs raises InUseError at once; another room
    may paginate meanwhile, and the room may paginate again after the reply."""
    with store_client(rooms) as c:
        s = c.store
        for room in (R[4], R[5], R[0], R[3]):  # the reply may (rarely) beat the second call
            first = s.paginate(room, 5)
            try:
                second = s.paginate(room, 5)
            except tether.InUseError as e:
                assert e.status == Status.ERR_IN_USE and "pagination" in str(e)
                other = s.paginate(R[2], 5)
                assert other.result(10 * SLOW)["events"]
                break
            second.result(10 * SLOW)
            first.result(10 * SLOW)
        else:
            pytest.fail("the first pagination always finished before the second call")
        first.result(10 * SLOW)
        assert s.paginate(room, 5).result(10 * SLOW)["events"]


def test_send_message_shows_a_pending_echo_then_the_synced_event(rooms: Backend) -> None:
    """send_message(): the reply is the local echo, announced as pending before the reply;
    once the backend syncs the event, it is in the timeline with its real id and pending is
    empty."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        p = s.send_message(R[2], "hello store")
        echo = p.result(10 * SLOW)
        assert echo["event_id"].startswith("~") and echo["content"]["body"] == "hello store"
        first = [ch for ch in drained(stream) if ch["cause"].get("request_id") == p.id]
        assert first and first[0]["rooms"][R[2]].get("pending") is True
        tl = s.timeline(R[2])
        if tl["pending"]:  # the sync may already have replaced it (the backend takes 20 ms)
            assert tl["pending"][0]["event"]["transaction_id"] == echo["transaction_id"]
            assert "timeline_rowid" not in tl["pending"][0]

        def synced() -> bool:
            t = s.timeline(R[2])
            return not t["pending"] and bool(t["events"]) and bodies(t)[-1] == "hello store"

        wait_until(synced, stream)
        last = s.timeline(R[2])["events"][-1]["event"]
        assert last["event_id"].startswith("$") and last["sender"] == ME
        assert last["rowid"] == echo["rowid"]
        assert ids(s.room_list(favourites_first=False, invites=False))[0] == R[2]


def test_a_failed_send_leaves_a_failed_pending_echo(rooms: Backend) -> None:
    """The text "fail" makes the backend's send fail: the echo stays in pending, marked with
    the server's error in send_error, and never reaches the timeline."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        echo = s.send_message(R[1], "fail").result(10 * SLOW)

        def failed() -> bool:
            pending = s.timeline(R[1])["pending"]
            return bool(pending) and pending[0]["event"].get("send_error", "").startswith("M_")

        wait_until(failed, stream)
        pending = s.timeline(R[1])["pending"]
        assert len(pending) == 1 and pending[0]["event"]["rowid"] == echo["rowid"]
        assert "M_FORBIDDEN" in pending[0]["event"]["send_error"]
        assert pending[0]["send_status"] == "failed"
        assert all(e["event"]["rowid"] != echo["rowid"] for e in s.timeline(R[1])["events"])


def failed_send(s: Store, stream: ChangeStream, room: str, text: str) -> int:
    """Sends a message the testkit's homeserver refuses; its rowid once it reads failed."""
    echo = s.send_message(room, text).result(10 * SLOW)

    def failed() -> bool:
        pending = s.timeline(room)["pending"]
        return bool(pending) and pending[0]["send_status"] == "failed"

    wait_until(failed, stream)
    return int(echo["rowid"])


def test_a_failed_send_is_resent_then_synced(rooms: Backend) -> None:
    """resend(): the echo reads as sending at once (a change set with cause "resend"
    before the call returns); the backend's second try goes through and the synced event,
    sent, takes its place."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        rowid = failed_send(s, stream, R[1], "fail once")
        p = s.resend(R[1], rowid)
        assert p.id > 0
        assert s.timeline(R[1])["pending"][0]["send_status"] == "sending"
        ch = wait_change(stream, lambda ch: ch["cause"].get("command") == "resend")
        assert ch["rooms"][R[1]]["updated"] == [rowid] and ch["rooms"][R[1]]["pending"]
        assert p.result(10 * SLOW)["rowid"] == rowid

        def synced() -> bool:
            t = s.timeline(R[1])
            return not t["pending"] and t["events"][-1]["event"]["rowid"] == rowid

        wait_until(synced, stream)
        assert s.timeline(R[1])["events"][-1]["send_status"] == "sent"


def test_a_refused_resend_fails_and_the_echo_is_failed_again(rooms: Backend) -> None:
    """A resend the backend refuses ("unknown transaction ID"): the reply raises, and the
    echo reads failed again as before."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        rowid = failed_send(s, stream, R[1], "fail, forget")
        before = s.timeline(R[1])["pending"]
        p = s.resend(R[1], rowid)
        with pytest.raises(tether.RemoteError):
            p.result(10 * SLOW)
        assert s.timeline(R[1])["pending"] == before


def test_a_failed_send_is_discarded_and_misuse_is_refused(rooms: Backend) -> None:
    """discard(): the failed echo leaves pending (cause "discard"); resend and discard take
    only a failed send in the pending tail, and a rowid that is not an int is a TypeError."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        rowid = failed_send(s, stream, R[1], "fail")
        with pytest.raises(TypeError):
            s.discard(R[1], str(rowid))  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            s.resend(R[1], True)
        with pytest.raises(tether.InvalidArgumentError):
            s.resend(R[1], 2**63)
        with pytest.raises(tether.InvalidArgumentError):
            s.discard("!nope:example.org", rowid)
        s.discard(R[1], rowid)
        assert s.timeline(R[1])["pending"] == []
        wait_change(stream, lambda ch: ch["cause"].get("command") == "discard")
        for again in (s.discard, s.resend):
            with pytest.raises(tether.InvalidArgumentError, match="not a failed send"):
                again(R[1], rowid)
    with pytest.raises(tether.InvalidArgumentError):
        s.discard(R[1], rowid)  # the store outlives its client; discarding is local
    s.close()


def test_mark_read_zeroes_the_unread_count(rooms: Backend) -> None:
    """mark_read() on the room with 3 unread messages: after the backend's sync the counts
    are 0 and the room leaves the unreads filter; the sync brings no receipt of ours (hicli
    leaves the user's own receipts out)."""
    with store_client(rooms) as c:
        s = c.store
        assert s.room(R[2])["entry"]["unread_messages"] == 3
        stream = s.changes()
        assert s.mark_read(R[2]).result(10 * SLOW) is None
        wait_until(lambda: s.room(R[2])["entry"]["unread_messages"] == 0, stream)
        assert s.room(R[2])["entry"]["unread_notifications"] == 0
        assert R[2] not in ids(s.room_list(space="unreads"))
        assert ME not in json.dumps(s.receipts(R[2]))
        with pytest.raises(tether.RemoteError, match="invalid receipt type"):
            s.mark_read(R[1], "m.bogus").result(10 * SLOW)


def test_members_sorted_by_power_level_after_load_state(rooms: Backend) -> None:
    """load_state(members=True) loads the whole state with the member list: members() is
    complete and sorted by power level (Alice 100, me 50, Bob 0); request_members() fetches
    only the members the store lacks, and sends nothing when none is missing."""
    with store_client(rooms) as c:
        s = c.store
        assert s.members(R[1])["complete"] is False
        s.load_state(R[1], members=True).result(10 * SLOW)
        m = s.members(R[1])
        assert m["complete"] is True
        assert [(x["user_id"], x["power_level"]) for x in m["members"]] == [
            (ALICE, 100), (ME, 50), (BOB, 0)]
        assert m["members"][0]["displayname"] == "Alice"
        assert s.room(R[1])["state_loaded"] is True
        pl = s.state(R[1], "m.room.power_levels", "")
        assert pl["content"]["users"][ALICE] == 100
        assert set(s.state(R[1], "m.room.member")) == {ME, ALICE, BOB}
        assert s.state(R[1], "m.room.topic", "") is None
        # R[4]: the initial sync brought only the preview sender's member event (Alice's).
        assert [x["user_id"] for x in s.members(R[4])["members"]] == [ALICE]
        got = s.request_members(R[4], [ALICE, BOB]).result(10 * SLOW)
        assert [e["state_key"] for e in got] == [BOB]
        assert {x["user_id"] for x in s.members(R[4])["members"]} == {ALICE, BOB}
        nothing = s.request_members(R[4], [ALICE, BOB])
        assert nothing.id == 0 and nothing.done() and nothing.result(0) is None


def test_cut_and_resume_keep_the_store_equal_to_a_fresh_clients(rooms: Backend) -> None:
    """The backend cuts the connection and a message arrives meanwhile: the client resumes,
    the store applies the missed message, and its room list equals that of a fresh client's
    store built from a new initial sync."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        # A buffered event first: the client then has a resume point to resume from.
        remote_message(rooms, R[1], "before the cut")
        wait_change(stream, lambda ch: R[1] in ch.get("rooms", {}))
        rooms.cut()
        sent = remote_message(rooms, R[0], "while cut")
        ch = wait_change(stream, lambda ch: R[0] in ch.get("rooms", {}))
        assert ch["rooms"][R[0]]["appended"] == [sent["rowid"]] and "cleared" not in ch
        # The resume counts as succeeded at the connection's init_complete, which comes after
        # the replayed message the store has just applied.
        wait_until(lambda: c.stats().resumes_succeeded >= 1, stream)
        assert c.stats().resumes_reset == 0
        with store_client(rooms) as fresh:
            a, b = s.room_list(), fresh.store.room_list()
            a.pop("gen"), b.pop("gen")
            assert a == b
            assert ids(a)[:3] == [INVITE, R[3], R[0]]
            for room in R:
                assert s.room(room)["meta"] == fresh.store.room(room)["meta"]
            assert s.spaces() == fresh.store.spaces()


def test_a_backend_restart_clears_the_store(rooms: Backend) -> None:
    """After a backend restart the resume is refused (RESET): the fresh initial sync comes
    as a change set with cleared, and the store holds the room list again afterwards."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        # A buffered event first: the client then asks to resume, which the new run refuses.
        remote_message(rooms, R[1], "before the restart")
        wait_change(stream, lambda ch: R[1] in ch.get("rooms", {}))
        before = ids(s.room_list())
        s.paginate(R[5], 5).result(10 * SLOW)
        rooms.control("/_testkit/restart")
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.RESUMED, seen=seen)
        assert seen[-1].resume_outcome == ResumeOutcome.RESET
        ch = wait_change(stream, lambda ch: ch.get("cleared") is True)
        assert ch["cause"]["command"] == "sync_complete"
        wait_event(c, lambda e: e.command == "init_complete")
        assert ids(s.room_list()) == before
        assert s.timeline(R[5])["events"] == []  # the paginated rows went with the reset


def test_asyncio_store_actions_wait_for_the_store_request_timeout(rooms: Backend) -> None:
    """The store's own ``request_timeout_ms`` bounds its actions, not the client's request
    timeout: a paginate asked while paused, with a client timeout of 0.2 s and a store one
    of 30 s, is answered once the client unpauses 6 s later (past the client's timeout and
    the binding's grace)."""

    async def main() -> None:
        opts = gomuks_opts(request_timeout=0.2)
        async with AsyncClient(rooms.url, store={"request_timeout_ms": 30000}, **opts) as c:
            s = c.store
            await await_event(c, lambda e: e.command == "init_complete")
            c.pause()
            pending = s.paginate(R[5], 3)
            await asyncio.sleep(6)
            c.unpause()
            reply = await pending
            assert len(reply["events"]) == 3

    asyncio.run(asyncio.wait_for(main(), 40 * SLOW))


def test_asyncio_store_changes_iterate_and_actions_await(rooms: Backend) -> None:
    """AsyncClient(store=True): `async for change in store.changes()` yields the change of a
    remote message, store actions are awaitable (paginate, send_message), a refused action
    raises when called, and the stream ends after close."""

    async def main() -> None:
        async with AsyncClient(rooms.url, store=True, **gomuks_opts()) as c:
            s = c.store
            assert isinstance(s, AsyncStore)
            await await_event(c, lambda e: e.command == "init_complete")
            stream = s.changes()
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, remote_message, rooms, R[5], "async hello")
            async for change in stream:
                if R[5] in change.get("rooms", {}) and change["rooms"][R[5]].get("appended"):
                    break
            assert bodies(s.timeline(R[5]))[-1] == "async hello"
            reply = await s.paginate(R[5], 5)
            assert len(reply["events"]) == 5
            assert len(s.timeline(R[5])["events"]) == 6
            pending = s.send_message(R[5], "async send")
            assert pending.id > 0
            echo = await pending
            assert echo["content"]["body"] == "async send"
            ev = await await_event(c, lambda e: e.kind == EventKind.STORE
                                   and R[5] in e.data.get("rooms", {}))
            assert isinstance(ev.data["gen"], int)
            while s.timeline(R[5])["pending"] or bodies(s.timeline(R[5]))[-1] != "async send":
                assert await stream.get(10 * SLOW) is not None  # until the send is synced
            with pytest.raises(tether.InvalidArgumentError):
                s.paginate("!nope:example.org")
            failed = await s.send_message(R[5], "fail once")
            while not s.timeline(R[5])["pending"] or \
                    s.timeline(R[5])["pending"][0]["send_status"] != "failed":
                assert await stream.get(10 * SLOW) is not None
            resent = await s.resend(R[5], failed["rowid"])
            assert resent["rowid"] == failed["rowid"] and "send_error" not in resent
            while s.timeline(R[5])["pending"] or bodies(s.timeline(R[5]))[-1] != "fail once":
                assert await stream.get(10 * SLOW) is not None  # until the resend is synced
            nothing = s.request_members(R[5], [ALICE])
            assert nothing.id == 0 and await nothing is None
            seen = []
            timed = s.changes(timeout=0.2)
            async for change in timed:
                seen.append(change)
            assert seen == []  # nothing changed within 0.2 s: the deadline ended it
        while await stream.get(1) is not None:  # what was collected, then the end
            pass
        assert await s.changes().get(5) is None  # the client is closed: ends at once
        assert s.room_list()["rooms"]  # the store outlives its client for reads
        with pytest.raises(tether.ClientClosedError):
            s.paginate(R[5])
        s.close()

    asyncio.run(asyncio.wait_for(main(), 40 * SLOW))


def test_asyncio_system_exit_raised_by_on_change_stops_the_loop_and_loses_no_event(
    rooms: Backend,
) -> None:
    """gomuks-rpc.md §4 with an AsyncStore whose on_change calls sys.exit(): SystemExit
    stops the loop, as from any of its callbacks, once the batch being delivered is queued;
    run again, the loop's consumer gets every event, no id skipped."""
    loop = asyncio.new_event_loop()
    try:
        c = loop.run_until_complete(_async_store_client(rooms))
        c.store.on_change(lambda ch: sys.exit(4))
        newest = 0
        for i in range(3):
            remote_message(rooms, R[2], f"exit {i}")
            newest = rooms.push(40)
        seen: List[int] = []

        async def consume() -> None:
            while not seen or min(seen) > newest:
                ev = await c.next_event(10 * SLOW)
                assert ev is not None, f"events stopped at {min(seen, default=0)}"
                if ev.kind == EventKind.MESSAGE and ev.request_id < 0:
                    seen.append(ev.request_id)

        task = loop.create_task(consume())
        exits = 0
        while not task.done():
            try:
                loop.run_until_complete(task)
            except SystemExit as e:
                assert e.code == 4
                exits += 1
        assert exits >= 1
        assert seen == list(range(max(seen), newest - 1, -1)), "an event was lost or repeated"
        loop.run_until_complete(c.close())
    finally:
        loop.close()


async def _async_store_client(backend: Backend) -> AsyncClient:
    c = AsyncClient(backend.url, store=True, **gomuks_opts())
    await await_event(c, lambda e: e.command == "init_complete")
    return c


def test_bad_arguments_raise_clearly(rooms: Backend) -> None:
    """Bad arguments raise the binding's exceptions with a clear message: unknown reads,
    spaces, orders and rooms (InvalidArgumentError), wrong types (TypeError), a store
    attached after connect (StateError naming store=True), bad store options."""
    with store_client(rooms) as c:
        s = c.store
        bad = tether.InvalidArgumentError
        with pytest.raises(bad, match="unknown store read"):
            s.read("rooms")
        with pytest.raises(bad, match="order"):
            s.room_list(order="size")
        with pytest.raises(bad, match="space"):
            s.room_list(space="!nope:example.org")
        with pytest.raises(bad, match="unknown room"):
            s.timeline("!nope:example.org")
        with pytest.raises(bad, match="unknown room"):
            s.paginate("!nope:example.org")
        with pytest.raises(bad, match="unknown room"):
            s.open_room("!nope:example.org")
        with pytest.raises(bad, match="room_id is empty"):
            s.paginate("")
        with pytest.raises(bad, match="limit"):
            s.paginate(R[1], -1)
        with pytest.raises(bad, match="exactly one"):
            s.event(R[1])
        with pytest.raises(bad, match="state_key needs a type"):
            s.state(R[1], state_key="")
        with pytest.raises(bad, match="unknown field"):
            s.read("room_list", {"sort": "name"})
        with pytest.raises(TypeError, match="list of user ids"):
            s.request_members(R[1], ALICE)
        with pytest.raises(TypeError, match="room_id must be a str"):
            s.timeline(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="text must be a str"):
            s.send_message(R[1], None)  # type: ignore[arg-type]
        assert s.room("!nope:example.org") is None
        assert s.event(R[1], event_id="$nope") is None
        assert isinstance(bad("x"), ValueError)
        with pytest.raises(tether.StateError, match="store=True"):
            Store(c)
        with pytest.raises(TypeError, match="AsyncStore"):
            Store(object())
        assert set(READS) >= {"room_list", "timeline", "session"}
    with pytest.raises(tether.InvalidArgumentError, match="evict_after"):
        tether.Client(rooms.url, store={"evict_after": 5}, **gomuks_opts())
    with pytest.raises(tether.InvalidArgumentError, match="evict_after_ms"):
        tether.Client(rooms.url, store={"evict_after_ms": -1}, **gomuks_opts())
    with pytest.raises(TypeError, match="store must be True"):
        tether.Client(rooms.url, store="yes", **gomuks_opts())  # type: ignore[arg-type]
    with pytest.raises(tether.UnsupportedError):
        tether.Client(rooms.url, protocol="rwws", token="dGV0aGVyLXRlc3Qta2V5", store=True)


def test_reading_after_close_raises_and_the_handle_is_freed(rooms: Backend) -> None:
    """Store.close() frees and detaches the store: reads and actions raise StateError,
    streams end, close is idempotent, and the client goes on without STORE events. A store
    nobody references is freed by its finaliser, and it outlives its closed client for
    reads."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        gen = s.session()["gen"]
        s.close()
        s.close()
        assert s.closed and "closed" in repr(s)
        with pytest.raises(tether.StateError, match="store is closed"):
            s.room_list()
        with pytest.raises(tether.StateError, match="store is closed"):
            s.paginate(R[1])
        with pytest.raises(tether.StateError, match="store is closed"):
            s.changes()
        assert stream.get(1) is None and list(stream) == []
        remote_message(rooms, R[1], "after the store closed")
        seen: List[Any] = []
        wait_event(c, lambda e: e.command == "sync_complete", seen=seen)
        assert c.request("echo", {"still": "fine"}) == {"still": "fine"}
        while True:
            ev = c.next_event(0.2)
            if ev is None:
                break
            seen.append(ev)
        assert [e for e in seen if e.kind == EventKind.STORE and e.data["gen"] > gen] == []
    # Closed client, open store: reads go on, actions say the client is closed.
    c = store_client(rooms)
    s = c.store
    c.close()
    assert s.room_list()["total"] == 7
    with pytest.raises(tether.ClientClosedError):
        s.paginate(R[1])
    assert s.changes().get(1) is None
    handle = s._handle
    del c, s
    gc.collect()
    assert not handle.live, "the finaliser freed the store handle"
    with store_client(rooms) as c:
        with c.store as s:
            assert s.room_list()["total"] == 7
        assert s.closed


def test_eviction_watch_and_open_rooms(rooms: Backend) -> None:
    """With evict_after_ms=0, collect_garbage() drops the timelines of rooms that are not
    open (announced with reset) and keeps the open room's; with watch(on=False) the change
    sets of rooms not open carry only meta."""
    c = tether.Client(rooms.url, store={"evict_after_ms": 0}, **gomuks_opts())
    with c:
        wait_event(c, lambda e: e.command == "init_complete")
        s = c.store
        s.paginate(R[1], 5).result(10 * SLOW)
        s.paginate(R[2], 5).result(10 * SLOW)
        s.open_room(R[2])
        assert s.room(R[2])["open"] is True
        stream = s.changes()
        assert s.collect_garbage() == 1
        # Announced at once, in a change set of its own.
        ch = wait_change(stream, lambda ch: ch["cause"].get("command") == "gc")
        assert ch["rooms"][R[1]].get("reset") is True, ch
        assert R[2] not in ch["rooms"]
        assert s.timeline(R[1])["events"] == []
        assert len(s.timeline(R[2])["events"]) == 5
        s.watch(on=False)
        remote_message(rooms, R[4], "not watched")
        ch = wait_change(stream, lambda ch: R[4] in ch.get("rooms", {}))
        assert ch["rooms"][R[4]] == {"meta": True}
        remote_message(rooms, R[2], "open, so watched")
        ch = wait_change(stream, lambda ch: R[2] in ch.get("rooms", {}))
        assert ch["rooms"][R[2]].get("appended")
        s.watch(R[4])
        remote_message(rooms, R[4], "watched now")
        ch = wait_change(stream, lambda ch: R[4] in ch.get("rooms", {}))
        assert ch["rooms"][R[4]].get("appended")
        s.watch()
        s.close_room(R[2])
        assert s.room(R[2])["open"] is False


def test_typing_is_read_from_the_store(rooms: Backend) -> None:
    """A typing notification (HTTP control) reaches the store: typing() lists the users,
    and the change set names the room."""
    with store_client(rooms) as c:
        s = c.store
        stream = s.changes()
        rooms.control(f"/_testkit/rooms/typing?room={urllib.parse.quote(R[1])}&users={ALICE},{BOB}")
        ch = wait_change(stream, lambda ch: R[1] in ch.get("rooms", {}))
        assert ch["rooms"][R[1]].get("typing") is True
        assert s.typing(R[1]) == [ALICE, BOB]
        assert s.room(R[1])["typing"] == [ALICE, BOB]

