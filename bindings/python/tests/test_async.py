"""tether.aio.AsyncClient against a real tether-backend (no pytest plugin: each test runs
its own event loop with an overall deadline)."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from typing import Any, Awaitable, List

import pytest

import tether
from tether import EventKind, Status
from tether.aio import AsyncClient

from conftest import SLOW, Backend, await_event, gomuks_opts


def arun(coro: Awaitable[Any], timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))  # type: ignore[arg-type]


def client(backend: Backend, **extra: Any) -> AsyncClient:
    return AsyncClient(backend.url, **gomuks_opts(**extra))


async def init_complete(c: AsyncClient) -> None:
    await await_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")


async def buffered_ids(c: AsyncClient, until: int, seen: List[Any]) -> List[int]:
    ids: List[int] = []

    def pred(e: Any) -> bool:
        if e.kind == EventKind.MESSAGE and e.id < 0:
            ids.append(e.id)
        return e.kind == EventKind.MESSAGE and e.id == until

    await await_event(c, pred, seen=seen)
    return ids


def test_a_bad_batch_size_raises_and_frees_the_native_client(backend: Backend) -> None:
    # The native client exists before the batch is made: it must be freed, which the
    # library shows by letting go of the client's proxy resolver (its destroy callback).
    async def main() -> None:
        for bad in (0, -1):
            with pytest.raises((tether.InvalidArgumentError, ValueError, OverflowError)):
                client(backend, batch_size=bad, proxy_resolver=lambda url: None)

    arun(main())
    gc.collect()
    assert not tether._options._resolvers


def test_a_collection_on_the_loop_while_it_holds_the_clients_lock_does_not_deadlock(
    backend: Backend,
) -> None:
    # As for the blocking client: a finalizer run by a collection inside the lock only
    # schedules the close, which then runs from the loop.
    async def main() -> None:
        c = client(backend)
        await c.wait_connected(10 * SLOW)
        core = c._core
        with core.lock:
            core.close_from_gc()  # would deadlock if it took the lock here
        deadline = time.monotonic() + 10 * SLOW
        while core.handle.live or not core.closed:
            assert time.monotonic() < deadline, "the scheduled close did not run"
            await asyncio.sleep(0.01)

    arun(main())
    backend.wait_stats(lambda s: s["connections"] == 0 and s["last_client_close_code"] == 1000)


def test_close_after_an_internal_panic_frees_at_once(backend: Backend, monkeypatch: Any) -> None:
    # As for the blocking client: close's answer is replaced by ERR_PANIC (a handle a panic
    # left unusable); nothing else is simulated.
    import tether._base as base

    panicked = lambda ptr: (int(Status.ERR_PANIC), "internal panic: injected")  # noqa: E731

    async def main() -> None:
        c = client(backend)
        await c.wait_connected(10 * SLOW)
        monkeypatch.setattr(base, "_close", panicked)
        monkeypatch.setattr(base, "_close_keep_resume", panicked)
        t0 = time.monotonic()
        await c.close(timeout=30)
        assert time.monotonic() - t0 < 5 * SLOW, "close waited for a CLOSED that cannot come"
        assert not c._core.handle.live

    arun(main())
    backend.wait_stats(lambda s: s["connections"] == 0)


def test_a_close_without_closed_ends_wait_connected_and_change_streams(
    backend: Backend, monkeypatch: Any
) -> None:
    """A close that ends without CLOSED (here a panicked handle; also a close timeout) still
    tells whoever waits: wait_connected() raises ClientClosedError and a store's change
    stream ends."""
    import tether._base as base

    panicked = lambda ptr: (int(Status.ERR_PANIC), "internal panic: injected")  # noqa: E731

    async def main() -> None:
        # Never connects: the port is closed, and the retries go on until the close.
        c = AsyncClient("http://127.0.0.1:9", store=True, **gomuks_opts())
        stream = c.store.changes()
        waiting = asyncio.ensure_future(c.wait_connected())
        changes = asyncio.ensure_future(stream.get())
        await asyncio.sleep(0.1)
        monkeypatch.setattr(base, "_close", panicked)
        await c.close(timeout=30)
        with pytest.raises(tether.ClientClosedError):
            await asyncio.wait_for(waiting, 2 * SLOW)
        assert await asyncio.wait_for(changes, 2 * SLOW) is None
        c.store.close()

    arun(main())


def test_no_event_reads_as_queued_once_closed_is_taken(backend: Backend) -> None:
    """stats().queued_events counts events only: the markers that wake consumers at the end
    are none."""

    async def main() -> None:
        c = client(backend)
        await c.wait_connected(10 * SLOW)
        await c.close()
        async for _ in c.events(5 * SLOW):
            pass
        assert await c.next_event(0) is None
        assert c.stats().queued_events == 0

    arun(main())


def test_request_response_and_errors(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend) as c:
            assert await c.request("echo", {"a": [1, "b"]}) == {"a": [1, "b"]}
            assert await c.request("echo") == {}
            with pytest.raises(tether.RemoteError) as e:
                await c.request("fail", {"message": "async nope"})
            assert e.value.message == "async nope"
            with pytest.raises(tether.InvalidUtf8Error):
                await c.request("echo", b"[1,")
            replies = await asyncio.gather(*(c.request("echo", {"i": i}) for i in range(50)))
            assert replies == [{"i": i} for i in range(50)]

    arun(main())


def test_request_timeout(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend) as c:
            await c.wait_connected(10 * SLOW)
            t0 = time.monotonic()
            with pytest.raises(tether.RequestTimeoutError):
                await c.request("sleep", {"ms": 3000}, timeout=0.3)
            assert time.monotonic() - t0 < 2.5 * SLOW
            assert await c.request("echo", {"ok": 1}) == {"ok": 1}

    arun(main())


def test_cancelling_the_task_cancels_the_request(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend) as c:
            await c.wait_connected(10 * SLOW)
            cancelled: List[int] = []
            real_cancel = c._core.cancel

            def spy(rid: int) -> None:
                cancelled.append(rid)
                real_cancel(rid)

            c._core.cancel = spy  # type: ignore[assignment,method-assign]
            t0 = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.request("sleep", {"ms": 5000}), 0.2)
            assert time.monotonic() - t0 < 2 * SLOW
            assert len(cancelled) == 1  # the library (and so the server) was told
            task = asyncio.ensure_future(c.request("sleep", {"ms": 5000}))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert len(cancelled) == 2
            assert c._core.pending == {} or all(f.done() for f in c._core.pending.values())
            assert await c.request("echo", {"after": "cancel"}) == {"after": "cancel"}

    arun(main())


def test_async_for_yields_events_until_closed(backend: Backend) -> None:
    async def main() -> None:
        c = client(backend)
        await init_complete(c)
        newest = backend.push(5)
        ids = await buffered_ids(c, newest, [])
        assert ids == list(range(newest + 4, newest - 1, -1))
        ev_kinds: List[Any] = []

        async def consume() -> None:
            async for ev in c:
                ev_kinds.append(ev.kind)

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        await c.close()
        await asyncio.wait_for(task, 5 * SLOW)  # the iteration ended by itself
        assert ev_kinds[-1] == EventKind.CLOSED
        assert await c.next_event(0.1) is None
        backend.wait_stats(lambda s: s["last_client_close_code"] == 1001)

    arun(main())


def test_next_event_with_timeout_zero_takes_a_queued_event(backend: Backend) -> None:
    """Timeout 0 takes what is already queued, as the blocking client does
    (``asyncio.wait_for(queue.get(), 0)`` gives up before the getter runs)."""

    async def main() -> None:
        async with client(backend) as c:
            await init_complete(c)
            newest = backend.push(3)
            deadline = time.monotonic() + 10 * SLOW
            queued = c._core.queue._queue  # type: ignore[attr-defined]
            while not any(e is not None and e.id == newest for e in list(queued)):
                assert time.monotonic() < deadline, "the events were never queued"
                await asyncio.sleep(0.01)
            ids: List[int] = []
            while True:
                ev = await c.next_event(0)
                assert ev is not None, f"next_event(0) returned None with events queued; got {ids}"
                ids.append(ev.id)
                if ev.id == newest:
                    break
            assert [i for i in ids if i < 0] == [newest + 2, newest + 1, newest]
            t0 = time.monotonic()
            await c.next_event(0)  # nothing queued (or a pong): returns at once
            assert time.monotonic() - t0 < 0.5 * SLOW

    arun(main())


def test_resume_after_a_cut_delivers_every_event_exactly_once(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend) as c:
            await init_complete(c)
            first = backend.push(10)
            seen: List[Any] = []
            before = await buffered_ids(c, first, seen)
            backend.cut()
            newest = backend.push(20)
            after = await buffered_ids(c, newest, seen)
            assert before + after == list(range(first + 9, newest - 1, -1))
            assert len([e for e in seen if e.kind == EventKind.CONNECTED and e.resume_attempted]) == 1
            state = c.resume_state()
            await c.close(keep_resume=True)  # 1001 would free the backend's entry (§7.1)
        assert state.last_event_id == newest
        missed = backend.push(7)
        async with client(backend, resume=state) as b:
            assert await buffered_ids(b, missed, []) == list(range(newest - 1, missed - 1, -1))

    arun(main())


def test_pongs_acknowledge_received_events(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend, ping_interval=0.1) as c:
            await init_complete(c)
            newest = backend.push(3)
            pong = await await_event(c, lambda e: e.kind == EventKind.PONG and e.acked_id == newest)
            assert pong.rtt_us is not None

    arun(main())


def test_no_thread_per_client_and_no_busy_polling(backend: Backend) -> None:
    async def main() -> None:
        # Compared as sets: a thread an earlier test left may end meanwhile.
        threads = set(threading.enumerate())
        async with client(backend) as c:  # default ping interval: 15 s, so the link is idle
            await init_complete(c)
            started = set(threading.enumerate()) - threads
            assert not started, started  # no Python thread was started
            calls = 0
            real = c._core.reader.poll

            def counting(ptr: int, timeout: int) -> Any:
                nonlocal calls
                calls += 1
                return real(ptr, timeout)

            c._core.reader.poll = counting  # type: ignore[assignment,method-assign]
            await asyncio.sleep(1.0)
            assert calls == 0, f"{calls} polls while nothing arrived"
            newest = backend.push(3)
            await buffered_ids(c, newest, [])
            assert 1 <= calls <= 10, calls  # woken by the descriptor, a few batches

    arun(main())


def test_bad_credentials_end_the_client(backend: Backend) -> None:
    async def main() -> None:
        c = AsyncClient(backend.url, username="tether", password="wrong")
        try:
            with pytest.raises(tether.UnauthorizedError):
                await c.wait_connected(10 * SLOW)
            assert isinstance(c.fatal, tether.UnauthorizedError)
            kinds = [e.kind async for e in c.events(timeout=5)]
            assert kinds[-2:] == [EventKind.DISCONNECTED, EventKind.CLOSED]
            with pytest.raises(tether.ClientClosedError):
                await c.request("echo")
        finally:
            await c.close()

    arun(main())


def test_server_close_codes_reconnect(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend) as c:
            await init_complete(c)
            backend.close_all(4002, "ping-timeout")
            d = await await_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
            assert (d.status, d.close_code, d.reason) == (Status.ERR_REMOTE_CLOSED, 4002, "ping-timeout")
            await await_event(c, lambda e: e.kind == EventKind.CONNECTED)
            assert await c.request("echo", {"back": 1}) == {"back": 1}

    arun(main())


def test_close_fails_pending_requests(backend: Backend) -> None:
    async def main() -> None:
        c = client(backend)
        await c.wait_connected(10 * SLOW)
        task = asyncio.ensure_future(c.request("sleep", {"ms": 5000}))
        await asyncio.sleep(0.05)
        await c.close()
        with pytest.raises(tether.ClientClosedError):
            await task
        with pytest.raises(tether.ClientClosedError):
            await c.request("echo")
        await c.close()  # idempotent

    arun(main())


def test_a_small_event_queue_pauses_reading_without_loss(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend, event_queue_size=4, batch_size=2) as c:
            await init_complete(c)
            newest = backend.push(40)
            deadline = time.monotonic() + 5 * SLOW
            while not c._core.paused and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # reading stays paused: the queue does not grow
            assert c._core.paused and c._core.queue.qsize() <= 4 + 2
            assert await buffered_ids(c, newest, []) == list(range(newest + 39, newest - 1, -1))

    arun(main())


def test_an_interrupt_while_a_batch_is_queued_loses_none_of_it(backend: Backend) -> None:
    # A plain signal handler that raises (a SIGTERM handler's SystemExit, Ctrl-C outside
    # asyncio.run) in the middle of queueing a batch lost the rest of it, which the library
    # counts as taken once the next poll clears the batch (gomuks spec 7.1). Held back, it
    # raises once the batch is queued, from the loop's callback.
    import signal

    class Interrupted(Exception):
        pass

    def raising(signum: int, frame: Any) -> None:
        raise Interrupted()

    async def main() -> None:
        async with client(backend, batch_size=64) as c:
            await init_complete(c)
            errors: List[Any] = []
            asyncio.get_running_loop().set_exception_handler(
                lambda loop, ctx: errors.append(ctx.get("exception"))
            )
            core = c._core
            real_note = core.note
            armed = [True]

            def note(ev: Any) -> None:
                real_note(ev)
                if armed[0] and ev.kind == EventKind.MESSAGE and ev.request_id < 0:
                    armed[0] = False
                    signal.raise_signal(signal.SIGUSR1)  # its handler runs as this returns

            core.note = note
            old = signal.signal(signal.SIGUSR1, raising)
            try:
                await asyncio.sleep(0.1)  # the handlers in place are looked up every 50 ms
                newest = backend.push(20)
                ids = await buffered_ids(c, newest, [])
            finally:
                signal.signal(signal.SIGUSR1, old)
            assert not armed[0]
            assert ids == list(range(newest + 19, newest - 1, -1))
            assert [type(e) for e in errors] == [Interrupted]

    arun(main())


def test_creating_outside_a_running_loop_is_an_error(backend: Backend) -> None:
    with pytest.raises(RuntimeError):
        AsyncClient(backend.url, **gomuks_opts())


def test_an_unreferenced_client_is_closed_by_the_garbage_collector(backend: Backend) -> None:
    import gc

    async def main() -> None:
        c = client(backend)
        await c.wait_connected(10 * SLOW)
        core = c._core
        del c
        gc.collect()
        deadline = time.monotonic() + 10 * SLOW
        while core.handle.live and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert not core.handle.live and not core.watching
        # A close the app did not ask for keeps the resume point (1000, gomuks-rpc.md §7.1).
        backend.wait_stats(lambda s: s["connections"] == 0 and s["last_client_close_code"] == 1000)

    arun(main())


def test_a_client_collected_while_its_loop_is_idle_is_never_polled_from_two_threads(
    backend: Backend,
) -> None:
    """Collected while its loop is not running, a client is drained and freed on a thread of
    its own; when the loop runs again meanwhile, it stays off that client's batch (one
    thread at a time, the header's rule for a tether_batch)."""
    loop = asyncio.new_event_loop()
    try:

        async def make() -> AsyncClient:
            c = client(backend)
            await c.wait_connected(10 * SLOW)
            return c

        c = loop.run_until_complete(make())
        core = c._core
        inside, overlaps = [0], [0]
        real_poll = core.reader.poll
        guard = threading.Lock()

        def spy(ptr: int, timeout_ms: int) -> Any:
            with guard:
                inside[0] += 1
                overlaps[0] += inside[0] > 1
            try:
                if threading.get_ident() != core.loop_thread:
                    time.sleep(0.3)  # stands in for a native wait off the loop's thread
                return real_poll(ptr, timeout_ms)
            finally:
                with guard:
                    inside[0] -= 1

        core.reader.poll = spy  # type: ignore[method-assign]
        del c
        gc.collect()  # the loop is not running: the close goes to a thread of its own
        loop.run_until_complete(asyncio.sleep(1.5 * SLOW))
        deadline = time.monotonic() + 10 * SLOW
        while core.handle.live and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.05))
        assert not core.handle.live
        assert overlaps[0] == 0, "the batch was polled from two threads at once"
    finally:
        loop.close()


def test_json_loads_parses_event_data_and_request_results(backend: Backend) -> None:
    calls: List[bytes] = []

    def loads(raw: bytes) -> Any:
        calls.append(raw)
        return json.loads(raw)

    async def main() -> None:
        async with client(backend, json_loads=loads) as c:
            assert await c.request("echo", {"aio": 1}) == {"aio": 1}
            assert any(b'{"aio":1}' in c for c in calls)  # alone or in its batch's array
            newest = backend.push(2)
            seen: List[Any] = []
            await await_event(c, lambda e: e.id == newest, seen=seen)
            ev = seen[-1]
            before = len(calls)
            assert ev.data == json.loads(ev.raw)
            # One call: this event's payload alone, or the array of its batch's payloads.
            assert len(calls[before:]) == 1
            assert calls[before] == ev.raw or (calls[before][:1] == b"[" and ev.raw in calls[before])

    arun(main())


def test_auth_token_from_the_login(backend: Backend) -> None:
    async def main() -> None:
        async with client(backend) as c:
            await c.wait_connected(10 * SLOW)
            token = c.auth_token()
            assert token
        async with AsyncClient(backend.url, token=token) as c2:
            assert await c2.request("echo", {"t": 2}) == {"t": 2}
            assert c2.auth_token() == token

    arun(main())
