"""The asyncio client: :class:`AsyncClient`.

The event loop watches the library's event descriptor (``tether_client_event_fd``) with
``loop.add_reader``; when it becomes readable the client drains the queue with
``tether_client_poll_batch(timeout=0)`` until it is empty. No thread per client or per
event, and no polling loop: the loop sleeps until the library has something.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, AsyncIterator, Dict, Mapping, Optional, Sequence, Tuple

from . import _ffi
from ._base import (
    AT_EXIT_TIMEOUT_S,
    REQUEST_GRACE_S,
    ClientState,
    CoreBase,
    JSONData,
    _strong,
    log,
    response_result,
)
from ._options import Options, check_options
from .errors import (
    ClientClosedError,
    RequestTimeoutError,
    Status,
    TetherError,
)
from .events import BatchReader, Event, EventKind, JSONLoads

if TYPE_CHECKING:
    # typing.Unpack for **kwargs needs Python 3.11; type checkers ship typing_extensions.
    from typing_extensions import Unpack

__all__ = ["AsyncClient"]

#: Batches taken per wake-up before yielding back to the loop (fairness under a flood).
_MAX_BATCHES_PER_WAKEUP = 8


class _AsyncCore(CoreBase):
    def __init__(
        self,
        url: Optional[str],
        options: Mapping[str, object],
        event_queue_size: int,
        batch_size: int,
        loop: asyncio.AbstractEventLoop,
        json_loads: Optional[JSONLoads],
    ) -> None:
        super().__init__(url, options, event_queue_size, json_loads)
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.reader = BatchReader(batch_size, self.event_cls)
        self.batch_size = batch_size
        self.pending: Dict[int, "asyncio.Future[Event]"] = {}
        self.queue: "asyncio.Queue[Optional[Event]]" = asyncio.Queue()
        self.ended = False  # CLOSED taken by a consumer (or delivery failed)
        self.closed_flag = asyncio.Event()
        self.state_changed = asyncio.Event()
        self.fd = -1
        self.watching = False
        self.paused = False

    def start(self) -> None:
        fd = self.call(_ffi.lib.tether_client_event_fd)
        if fd < 0:
            raise _ffi.error(Status.ERR_STATE, "event_fd")
        self.fd = fd
        self.watch()
        self.connect()

    def queued_here(self) -> int:
        return self.queue.qsize()

    # -- delivery (loop thread) ------------------------------------------------------------

    def watch(self) -> None:
        if not self.watching and self.fd >= 0 and self.handle.live:
            self.loop.add_reader(self.fd, self.on_readable)
            self.watching = True

    def unwatch(self) -> None:
        if self.watching:
            self.watching = False
            try:
                self.loop.remove_reader(self.fd)
            except Exception:  # the loop is closed already
                pass

    def on_readable(self) -> None:
        try:
            for _ in range(_MAX_BATCHES_PER_WAKEUP):
                st, events = self.handle.call(self.reader.poll, 0)
                if st != Status.OK:
                    if st == Status.CLOSED:
                        self.unwatch()
                    break
                self.deliver(events)
                if self.closed:
                    self.unwatch()
                    break
                if self.queue.qsize() >= self.queue_limit and not self.closing:
                    # Backpressure: stop taking events until a consumer catches up (the
                    # library then stops reading the socket). Closing always drains.
                    self.paused = True
                    self.unwatch()
                    break
                if len(events) < self.batch_size:
                    # The library's queue was empty after this batch, so the descriptor was
                    # reset; anything newer makes it readable again.
                    break
        except ClientClosedError:
            self.unwatch()
        except TetherError as e:
            self.fatal = e
            log.error("tether: event delivery stopped: %s", e)
            self.state_changed.set()  # wait_connected() raises it
            self.unwatch()
            self.fail_pending()
            self.queue.put_nowait(None)
        if self.closed and self.closing:
            self.release()

    def deliver(self, events: Sequence[Event]) -> None:
        for ev in events:
            if ev.kind == EventKind.RESPONSE:
                fut = self.pending.pop(ev.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
                continue
            self.note(ev)
            self.queue.put_nowait(ev)
            if ev.kind in (EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CLOSED):
                self.state_changed.set()
            if ev.kind == EventKind.CLOSED:
                self.queue.put_nowait(None)  # wakes every other consumer
                self.closed_flag.set()
                self.fail_pending()

    def fail_pending(self) -> None:
        pending, self.pending = self.pending, {}
        for rid, fut in pending.items():
            if not fut.done():
                fut.set_result(Event(EventKind.RESPONSE, rid, Status.ERR_CLIENT_CLOSED, "", b""))

    async def next_event(self, timeout: Optional[float]) -> Optional[Event]:
        if self.ended and self.queue.empty():
            return None
        try:
            # What is queued first: asyncio.wait_for(get(), 0) gives up before get() runs,
            # even with an event queued.
            ev = self.queue.get_nowait()
        except asyncio.QueueEmpty:
            if timeout is not None and timeout <= 0:
                return None
            try:
                if timeout is None:
                    ev = await self.queue.get()
                else:
                    ev = await asyncio.wait_for(self.queue.get(), timeout)
            except asyncio.TimeoutError:
                return None
        if ev is None:
            self.ended = True
            self.queue.put_nowait(None)
            return None
        if self.paused and self.queue.qsize() <= self.queue_limit // 2:
            self.paused = False
            self.watch()
        return ev

    # -- requests --------------------------------------------------------------------------

    async def request(self, command: str, data: JSONData, timeout: Optional[float]) -> JSONData:
        rid = self.start_request(command, data, timeout)
        fut: "asyncio.Future[Event]" = self.loop.create_future()
        if self.closed or (self.fatal is not None and not self.watching):
            fut.set_result(Event(EventKind.RESPONSE, rid, Status.ERR_CLIENT_CLOSED, "", b""))
        else:
            self.pending[rid] = fut
        bound = (timeout if timeout is not None else self.request_timeout) + REQUEST_GRACE_S
        try:
            ev = await asyncio.wait_for(fut, bound)
        except asyncio.TimeoutError:
            self.pending.pop(rid, None)
            self._cancel_quietly(rid)
            raise RequestTimeoutError(
                f"request {command!r}: no reply within {bound:.1f} s", request_id=rid
            ) from None
        except asyncio.CancelledError:
            # The awaiting task was cancelled: tell the library (and so the server).
            self.pending.pop(rid, None)
            self._cancel_quietly(rid)
            raise
        return response_result(ev)

    def _cancel_quietly(self, rid: int) -> None:
        try:
            self.cancel(rid)
        except TetherError:
            pass

    # -- closing ---------------------------------------------------------------------------

    def release(self) -> None:
        """Stops watching the descriptor and frees the native client (loop thread)."""
        self.unwatch()
        self.reader.free()
        self.free()
        self.fail_pending()

    async def close(self, timeout: Optional[float], keep_resume: bool) -> None:
        self.check_pid()
        if not self.handle.live:
            return
        self.close_native(keep_resume)
        if not self.closed:
            self.watch()  # a paused client must still see CLOSED
            try:
                await asyncio.wait_for(self.closed_flag.wait(), timeout)
            except asyncio.TimeoutError:
                log.warning("tether: CLOSED did not arrive in %s s; freeing anyway", timeout)
        self.release()
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def close_from_gc(self) -> None:
        if self.pid != os.getpid() or not self.handle.live:
            return
        try:
            if threading.get_ident() == self.loop_thread and not self.loop.is_closed():
                self.close_native()
                if self.closed:
                    self.release()
                else:
                    # on_readable releases it when CLOSED arrives (even if it was paused).
                    _strong.add(self)
                    self.watch()
            elif not self.loop.is_closed() and self.loop.is_running():
                _strong.add(self)
                self.loop.call_soon_threadsafe(self.close_from_gc)
            elif self.begin_exit():
                # No loop will read its events any more: drain here, as at exit.
                self.end_exit(time.monotonic() + AT_EXIT_TIMEOUT_S)
        except TetherError:
            pass
        except RuntimeError:  # the loop closed in between
            pass

    def begin_exit(self) -> bool:
        if not self.handle.live:
            return False
        self.close_native()
        if not self.loop.is_closed() and self.loop.is_running():
            if threading.get_ident() != self.loop_thread:
                return False  # the loop's thread owns polling; leave the memory
        return True

    def end_exit(self, deadline: float) -> bool:
        """Drains until CLOSED or ``deadline``, then frees. Only when no loop is running
        this client's reader, so nothing polls concurrently."""
        try:
            while not self.closed:
                left_ms = int((deadline - time.monotonic()) * 1000)
                st, events = self.handle.call(self.reader.poll, max(0, left_ms))
                if st == Status.CLOSED:
                    break
                for ev in events:
                    self.note(ev)
                if left_ms <= 0:
                    break
        except TetherError:
            pass
        arrived = self.closed
        self.release()
        return arrived


class AsyncClient(ClientState):
    """An asyncio client for one backend, kept connected and resumed by the library.

    Create it inside a running event loop (it registers the library's event descriptor with
    ``loop.add_reader``); the connection starts at once. Use ``async with``, or ``await
    client.close()``. Takes the connection options of :class:`tether.Options` and the
    parameters of :class:`tether.Client` except ``on_event``; like it, no ``url`` with
    ``in_process=(library_path, data_root)`` (the gomuks backend bundled into the process).

    >>> async with AsyncClient(url, username="me", password="...") as client:
    ...     print(await client.request("echo", {"x": 1}))
    ...     async for event in client:
    ...         ...

    :raises RuntimeError: no event loop is running.
    :raises ConfigError: the configuration is invalid.
    :raises TypeError: a keyword argument that is not an option.
    """

    _core: _AsyncCore

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        event_queue_size: int = 10000,
        batch_size: int = 256,
        json_loads: Optional[JSONLoads] = None,
        **options: Unpack[Options],
    ) -> None:
        check_options("AsyncClient", options)
        loop = asyncio.get_running_loop()
        self._core = core = _AsyncCore(
            url, options, event_queue_size, batch_size, loop, json_loads
        )
        try:
            core.start()
        except BaseException:
            core.release()  # nothing polls yet: free at once
            raise
        self._finalizer = weakref.finalize(self, core.close_from_gc)
        self._finalizer.atexit = False  # at exit, tether's own handler closes and waits

    async def request(
        self, command: str, data: JSONData = None, *, timeout: Optional[float] = None
    ) -> JSONData:
        """Sends ``command`` with ``data`` and returns the reply's data parsed from JSON.

        ``data`` is any JSON-serialisable value (``None`` sends ``{}``) or ``bytes`` of JSON;
        ``timeout`` (seconds) overrides the client's request timeout. Cancelling the awaiting
        task (``asyncio.wait_for``, ``task.cancel()``) cancels the request on the server.

        :raises RemoteError: the server answered with an error (``.message`` is its text).
        :raises RequestTimeoutError: no reply in time (the server was told to cancel).
        :raises DisconnectedError: the connection dropped first; the outcome is unknown.
        :raises ClientClosedError: the client is (or got) closed.
        :raises StateError: rwws clients have no requests.
        """
        return await self._core.request(command, data, timeout)

    def cancel(self, request_id: int) -> None:
        """Cancels request ``request_id`` by id (prefer cancelling the awaiting task)."""
        self._core.cancel(request_id)

    def send_packet(self, packet: bytes) -> None:
        """rwws: sends one raw packet (queued while disconnected)."""
        self._core.send_packet(packet)

    def send_settings(self, settings: Sequence[Tuple[int, bytes]]) -> None:
        """rwws: sends one Settings packet with ``(id, value)`` pairs."""
        self._core.send_settings(settings)

    async def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event (never a RESPONSE), waiting up to ``timeout`` seconds. ``None`` on
        timeout, and at once after CLOSED was taken."""
        self._core.check_pid()
        return await self._core.next_event(timeout)

    async def events(self, timeout: Optional[float] = None) -> AsyncIterator[Event]:
        """Iterates over events until CLOSED (yielded last), or until ``timeout`` seconds
        have passed since the iteration started."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            ev = await self.next_event(left)
            if ev is None:
                return
            yield ev
            if ev.kind == EventKind.CLOSED:
                return

    def __aiter__(self) -> "AsyncClient":
        return self

    async def __anext__(self) -> Event:
        ev = await self.next_event()
        if ev is None:
            raise StopAsyncIteration
        return ev

    async def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Waits (without consuming events) until the client is connected.

        :raises asyncio.TimeoutError: not connected in time.
        :raises ConnectionFailedError: the connection ended for good, e.g.
            :class:`UnauthorizedError` for a refused login (the same error as ``fatal``).
        :raises ClientClosedError: the client was closed.
        """
        core = self._core

        async def until() -> None:
            while not core.connected:
                if core.fatal is not None or core.closed:
                    raise core.connect_error()
                core.state_changed.clear()
                await core.state_changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def close(self, timeout: Optional[float] = 10.0, *, keep_resume: bool = False) -> None:
        """Closes gracefully, waits up to ``timeout`` seconds for CLOSED and frees the native
        client. Pending requests fail with :class:`ClientClosedError`. Idempotent.

        gomuks: close code 1001 frees the events the backend kept for this client;
        ``keep_resume=True`` closes with 1000 so a later client given :meth:`resume_state`
        receives what it missed."""
        await self._core.close(timeout, keep_resume)
        self._finalizer.detach()

    aclose = close

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("connected" if self.connected else "connecting")
        return f"<tether.aio.AsyncClient {state}>"
