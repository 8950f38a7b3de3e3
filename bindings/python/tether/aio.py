"""The asyncio client: :class:`AsyncClient`.

The event loop watches the library's event descriptor (``tether_client_event_fd``) with
``loop.add_reader``; when it becomes readable the client drains the queue with
``tether_client_poll_batch(timeout=0)`` until it is empty. No thread per client or per
event, and no polling loop: the loop sleeps until the library has something.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Deque,
    Dict,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from . import _ffi
from ._base import (
    AT_EXIT_TIMEOUT_S,
    AsyncReply,
    REQUEST_GRACE_S,
    BytesLike,
    ClientState,
    CoreBase,
    JSONData,
    _strong,
    download_params,
    keep_first,
    log,
    pass_on,
    response_result,
    start_thread,
    upload_params,
)
from ._options import Options, PathArg, check_options
from ._signals import signals_held
from .errors import (
    ClientClosedError,
    RequestTimeoutError,
    Status,
    TetherError,
)
from .events import BatchReader, Event, EventKind, JSONLoads
from .store import AsyncStore, StoreOptions

if TYPE_CHECKING:
    # typing.Unpack for **kwargs needs Python 3.11; type checkers ship typing_extensions.
    from typing_extensions import Unpack

__all__ = ["AsyncClient", "AsyncTransfer"]

#: Batches taken per wake-up before yielding back to the loop (fairness under a flood).
_MAX_BATCHES_PER_WAKEUP = 8
_TRANSFER_KINDS = (EventKind.PROGRESS, EventKind.CHUNK)


class AsyncTransfer(AsyncReply):
    """A media upload or download in flight (from :meth:`AsyncClient.upload_media` or
    :meth:`AsyncClient.download_media`). ``async for`` over it yields the progress reports
    (upload: floats, as the backend reports them: a fraction from 0 to 1 for gomuks v0.2607.0) or the chunks (download: ``bytes``, in order) and ends once
    all were read and the reply arrived; awaiting it (``await transfer``) gives the reply's
    data (upload: the ``m.room.message`` content to send; download: the cached file's row and
    path) or raises.

    Reports not read yet are held in memory; awaiting the result stops the stream (what was
    not read is dropped) without ending the request. Cancelling the task that iterates or
    awaits it cancels the request, as for :meth:`AsyncClient.request`; so does passing the
    request's timeout plus a grace period (``RequestTimeoutError``).
    """

    __slots__ = ("_items", "_wake", "_streaming")

    def __init__(
        self,
        core: "_AsyncCore",
        request_id: int,
        what: str,
        fut: "asyncio.Future[Event]",
        deadline: float,
    ) -> None:
        super().__init__(core, request_id, what, fut, deadline)
        self._items: Deque[Event] = deque()
        self._wake = asyncio.Event()
        self._streaming = True
        fut.add_done_callback(self._on_reply)

    def _push(self, ev: Event) -> None:
        if self._streaming:
            self._items.append(ev)
            self._wake.set()

    def _on_reply(self, _: "asyncio.Future[Event]") -> None:
        self._core.transfers.pop(self.id, None)
        self._wake.set()

    def __aiter__(self) -> "AsyncTransfer":
        return self

    async def __anext__(self) -> Any:
        ev = await self._core.next_item(self)
        if ev is None:
            raise StopAsyncIteration
        return ev.raw if ev.kind == EventKind.CHUNK else ev.progress

    async def result(self) -> JSONData:
        """Stops the stream (unread reports are dropped) and returns the reply's data.

        :raises RemoteError: the backend refused or failed it (``.message``).
        :raises RequestTimeoutError: no reply in time (the request is cancelled).
        :raises UnsupportedError: a download from a backend library without streaming
            download.
        :raises ClientClosedError: the client was closed first.
        """
        self._streaming = False
        self._items.clear()
        return await super().result()


async def _run_transfer(t: AsyncTransfer, each: Optional[Callable[[Any], Any]]) -> JSONData:
    """Reads ``t`` to its end, calling ``each`` (awaiting what it returns, if awaitable) with
    every report; returns its result. Anything raised meanwhile cancels the request."""
    try:
        async for item in t:
            if each is not None:
                r = each(item)
                if inspect.isawaitable(r):
                    await r
    except BaseException:
        try:
            t.cancel()
        except TetherError:  # closed meanwhile: what was raised matters, not this
            pass
        raise
    return await t.result()


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
        try:
            self.reader = BatchReader(batch_size, self.event_cls)
        except BaseException:
            self.free()  # a bad batch_size must not leak the native client made above
            raise
        self.batch_size = batch_size
        self.pending: Dict[int, "asyncio.Future[Event]"] = {}
        self.transfers: Dict[int, AsyncTransfer] = {}
        self.queue: "asyncio.Queue[Optional[Event]]" = asyncio.Queue()
        self.ended = False  # CLOSED taken by a consumer (or delivery failed)
        self.end_markers = 0  # the None markers in ``queue``
        self.closed_flag = asyncio.Event()
        self.state_changed = asyncio.Event()
        self.fd = -1
        self.watching = False
        self.paused = False
        #: Held by whoever polls the batch reader or frees it: the loop (on_readable), or the
        #: thread that drains a client collected while its loop was not running (end_exit),
        #: which the loop may start running again meanwhile. A batch is one thread's at a time.
        self.drain_lock = threading.Lock()

    def start(self) -> None:
        fd = self.call(_ffi.lib.tether_client_event_fd)
        if fd < 0:
            raise _ffi.error(Status.ERR_STATE, "event_fd")
        self.fd = fd
        self.watch()
        self.connect()

    def queued_here(self) -> int:
        # The end markers are no events.
        return self.queue.qsize() - self.end_markers

    def held_events(self) -> Sequence[Event]:
        # asyncio.Queue keeps its items in the deque `_queue` (CPython and PyPy alike).
        # Copied in one step first: the loop may change it meanwhile.
        return tuple(ev for ev in tuple(getattr(self.queue, "_queue", ())) if ev is not None)

    def mark_end(self) -> None:
        """Queues an end marker: it wakes a consumer, which puts it back for the next."""
        self.end_markers += 1
        self.queue.put_nowait(None)

    # -- delivery (loop thread) ------------------------------------------------------------

    def watch(self) -> None:
        if not self.watching and self.fd >= 0 and self.handle.live:
            self.loop.add_reader(self.fd, self.on_readable)
            self.watching = True

    def unwatch(self) -> None:
        if threading.get_ident() != self.loop_thread and self.loop.is_running():
            # A running loop's readers are changed on its own thread only.
            try:
                self.loop.call_soon_threadsafe(self.unwatch)
            except RuntimeError:  # the loop closed in between: it watches nothing any more
                pass
            return
        if self.watching:
            self.watching = False
            try:
                self.loop.remove_reader(self.fd)
            except Exception:  # the loop is closed already
                pass

    def on_readable(self) -> None:
        if not self.drain_lock.acquire(blocking=False):
            # Another thread drains this collected client and frees it: not the loop's any more.
            self.unwatch()
            return
        try:
            self.take_ready()
        finally:
            self.drain_lock.release()

    def take_ready(self) -> None:
        try:
            # A plain signal handler that raised as a batch was being queued would lose the
            # rest of that batch, which the library counts as taken once the next poll clears
            # it; held back, it raises once the batches are queued and what they set off is
            # done (an on_change exception raised here then is its __context__).
            with signals_held():
                self.take_and_pass_on()
        finally:
            # Also when a held-back handler raised: CLOSED may have been queued.
            if self.closed and self.closing:
                self.release()

    def take_and_pass_on(self) -> None:
        """``take_batches``, then what delivery stopping or an ``on_change`` exception calls
        for."""
        deferred: Optional[BaseException] = None
        try:
            deferred = self.take_batches()
        except ClientClosedError:
            self.unwatch()
        except TetherError as e:
            self.fatal = e
            log.error("tether: event delivery stopped: %s", e)
            self.state_changed.set()  # wait_connected() raises it
            self.closed_flag.set()  # change streams end: nothing more will be delivered
            self.unwatch()
            self.fail_pending()
            self.mark_end()
        pass_on(deferred, app_thread=True)  # the loop's thread is the app's

    def take_batches(self) -> Optional[BaseException]:
        """Up to a few batches from the library, queued; returns what an ``on_change``
        callback raised to stop the app (see ``deliver``)."""
        deferred: Optional[BaseException] = None
        for _ in range(_MAX_BATCHES_PER_WAKEUP):
            st, events = self.handle.call(self.reader.poll, 0)
            if st != Status.OK:
                if st == Status.CLOSED:
                    self.unwatch()
                break
            deferred = self.deliver(events)
            self.reader.delivered()
            if self.closed:
                self.unwatch()
                break
            if self.queue.qsize() >= self.queue_limit and not self.closing:
                # Backpressure: stop taking events until a consumer catches up (the
                # library then stops reading the socket). Closing always drains.
                self.paused = True
                self.unwatch()
                break
            if deferred is not None:
                break  # the app is stopping: no more batches before it hears of it
            if len(events) < self.batch_size:
                # The library's queue was empty after this batch, so the descriptor was
                # reset; anything newer makes it readable again.
                break
        return deferred

    def deliver(self, events: Sequence[Event]) -> Optional[BaseException]:
        """Routes and queues a batch; returns what an ``on_change`` callback raised to stop
        the app, raised by the caller once the batch is delivered (see ``call_app``)."""
        deferred: Optional[BaseException] = None
        for ev in events:
            if ev.kind == EventKind.RESPONSE:
                fut = self.pending.pop(ev.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ev)
                continue
            if ev.kind in _TRANSFER_KINDS:
                # Always a Transfer's (registered before the loop could deliver anything),
                # and none follows its RESPONSE.
                t = self.transfers.get(ev.request_id)
                if t is not None:
                    t._push(ev)
                continue
            if ev.kind == EventKind.STORE:
                # The store's subscribers first, then the app's events like a MESSAGE.
                hub = self.store_hub
                if hub is not None:
                    deferred = keep_first(deferred, hub.publish(ev))
            self.note(ev)
            self.queue.put_nowait(ev)
            if ev.kind in (EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CLOSED):
                self.state_changed.set()
            if ev.kind == EventKind.CLOSED:
                self.mark_end()  # wakes every other consumer
                self.closed_flag.set()
                self.fail_pending()
        return deferred

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
            self.end_markers -= 1
            self.mark_end()
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

    def start_transfer(
        self, what: str, params: bytes, data: Optional[BytesLike], timeout: Optional[float]
    ) -> AsyncTransfer:
        # Loop thread, no await until registered: nothing is delivered in between.
        rid = self.start_media(what, params, data, timeout)
        fut: "asyncio.Future[Event]" = self.loop.create_future()
        bound = (timeout if timeout is not None else self.request_timeout) + REQUEST_GRACE_S
        t = AsyncTransfer(self, rid, what, fut, self.loop.time() + bound)
        if self.closed or (self.fatal is not None and not self.watching):
            fut.set_result(Event(EventKind.RESPONSE, rid, Status.ERR_CLIENT_CLOSED, "", b""))
        else:
            self.pending[rid] = fut
            self.transfers[rid] = t
        return t

    async def next_item(self, t: AsyncTransfer) -> Optional[Event]:
        """The next report of ``t``; ``None`` once its reply arrived and every report was
        taken. Past ``t``'s deadline, or when the awaiting task is cancelled: cancels it."""
        while True:
            if t._items:
                return t._items.popleft()
            if t._fut.done():
                return None
            left = t._deadline - self.loop.time()
            if left <= 0:
                self._cancel_quietly(t.id)
                raise RequestTimeoutError(f"{t.what}: no reply in time", request_id=t.id)
            t._wake.clear()
            try:
                await asyncio.wait_for(t._wake.wait(), left)
            except asyncio.TimeoutError:
                pass
            except asyncio.CancelledError:
                self._cancel_quietly(t.id)
                raise

    def _cancel_quietly(self, rid: int) -> None:
        try:
            self.cancel(rid)
        except TetherError:
            pass

    # -- closing ---------------------------------------------------------------------------

    def release(self) -> None:
        """Stops watching the descriptor and frees the native client: on the loop's thread
        when the loop runs, so the descriptor leaves its selector before the free closes it
        (a descriptor opened meanwhile with the same number would be taken for it)."""
        if threading.get_ident() != self.loop_thread and self.loop.is_running():
            try:
                self.loop.call_soon_threadsafe(self.release)
                return
            except RuntimeError:  # the loop closed in between: nothing watches the descriptor
                pass
        self.unwatch()
        self.reader.free()
        self.free()
        self.fail_pending()

    async def close(self, timeout: Optional[float], keep_resume: bool) -> None:
        self.check_pid()
        if not self.handle.live:
            return
        # False: an internal panic left the handle unusable; no CLOSED will come, free now.
        if self.close_native(keep_resume) and not self.closed:
            self.watch()  # a paused client must still see CLOSED
            try:
                await asyncio.wait_for(self.closed_flag.wait(), timeout)
            except asyncio.TimeoutError:
                # CLOSED may have come while wait_for cancelled its wait.
                if not self.closed:
                    log.warning("tether: CLOSED did not arrive in %s s; freeing anyway", timeout)
        self.release()
        if not self.closed:
            self.closed = True
            self.mark_end()
        # CLOSED may never have come (a timeout, a panic): whoever waits for it, or for the
        # connection (wait_connected, change streams), is told here instead.
        self.closed_flag.set()
        self.state_changed.set()

    def close_from_gc(self) -> None:
        """The client object was collected without close(). A collection runs at any
        allocation, on any thread, also one that holds this client's lock (not reentrant):
        the close itself runs later, from the loop, or on a thread of its own."""
        if self.pid != os.getpid() or not self.handle.live:
            return
        try:
            if not self.loop.is_closed() and self.loop.is_running():
                _strong.add(self)
                self.loop.call_soon_threadsafe(self.close_collected)
            else:
                start_thread(self.close_collected)
        except RuntimeError:  # the loop closed in between, or the interpreter is exiting
            pass

    def close_collected(self) -> None:
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
                self.loop.call_soon_threadsafe(self.close_collected)
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
        this client's reader; should its loop run again meanwhile, the drain lock keeps it
        off the reader."""
        if not self.drain_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return False  # the loop is delivering: it frees the client once CLOSED comes
        try:
            return self.drain_until(deadline)
        finally:
            self.drain_lock.release()

    def drain_until(self, deadline: float) -> bool:
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

    ``store=True`` (or a mapping of store options) attaches a native gomuks store before
    connecting: ``client.store`` (:class:`tether.store.AsyncStore`).

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
        store: StoreOptions = False,
        **options: Unpack[Options],
    ) -> None:
        check_options("AsyncClient", options)
        loop = asyncio.get_running_loop()
        self._core = core = _AsyncCore(
            url, options, event_queue_size, batch_size, loop, json_loads
        )
        self._store: Optional[AsyncStore] = None
        try:
            if store is not False and store is not None:
                # Before connect: the store sees every event.
                self._store = AsyncStore._attach(core, store)
            core.start()
        except BaseException:
            if self._store is not None:
                self._store.close()
            core.release()  # nothing polls yet: free at once
            raise
        self._finalizer = weakref.finalize(self, core.close_from_gc)
        self._finalizer.atexit = False  # at exit, tether's own handler closes and waits

    @property
    def store(self) -> AsyncStore:
        """The native store attached with ``store=True`` (:class:`tether.store.AsyncStore`).

        :raises StateError: the client was created without ``store=True``."""
        return self._attached_store()

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
        """Cancels request ``request_id`` by id (prefer cancelling the awaiting task).

        :raises StateError: the client has stopped (state ``CLOSED``): the request has ended
            or is ending.
        :raises InvalidArgumentError: no request of this client has that id.
        """
        self._core.cancel(request_id)

    def send_packet(self, packet: bytes) -> None:
        """rwws: sends one raw packet (queued while disconnected); raises as
        :meth:`tether.Client.send_packet` does."""
        self._core.send_packet(packet)

    def send_settings(self, settings: Sequence[Tuple[int, bytes]]) -> None:
        """rwws: sends one Settings packet with ``(id, value)`` pairs."""
        self._core.send_settings(settings)

    # -- media (in-process) ------------------------------------------------------------------

    def upload_media(
        self,
        params: JSONData = None,
        data: Optional[BytesLike] = None,
        *,
        path: Optional[PathArg] = None,
        timeout: Optional[float] = None,
    ) -> AsyncTransfer:
        """In-process: starts gomuks's ``upload_media`` of ``data`` (bytes, copied before
        this returns) or of the file at ``path``, and returns its :class:`AsyncTransfer`
        at once: ``async for percent in transfer`` for the progress, ``await transfer`` for
        the ``m.room.message`` content to send. Parameters as :meth:`tether.Client.upload_media`.

        :raises UnsupportedError: a websocket client (use the backend's HTTP upload).
        :raises InvalidArgumentError: both or neither of ``data`` and a path.
        """
        payload = upload_params(params, data, path)
        return self._core.start_transfer("upload_media", payload, data, timeout)

    async def upload(
        self,
        params: JSONData = None,
        data: Optional[BytesLike] = None,
        *,
        path: Optional[PathArg] = None,
        timeout: Optional[float] = None,
        on_progress: Optional[Callable[[float], Any]] = None,
    ) -> JSONData:
        """In-process: :meth:`upload_media`, calling ``on_progress(progress)`` for each report
        (awaited if it returns an awaitable); returns the ``m.room.message`` content to send.
        An exception from ``on_progress``, or cancelling the task, cancels the upload.

        :raises RemoteError: the backend refused or failed the upload.
        :raises RequestTimeoutError: no reply in time.
        :raises UnsupportedError: a websocket client.
        """
        return await _run_transfer(
            self.upload_media(params, data, path=path, timeout=timeout), on_progress
        )

    def download_media(
        self, params: JSONData, *, timeout: Optional[float] = None
    ) -> AsyncTransfer:
        """In-process: starts gomuks's ``download_media`` (its JSON object, or the
        ``mxc://`` URI alone as a ``str``) and returns its :class:`AsyncTransfer` at once:
        ``async for chunk in transfer`` for the file's bytes, ``await transfer`` for the
        cached file's row and path.

        :raises UnsupportedError: a websocket client; as the result, a backend library
            without streaming download (gomuks v0.2607.0).
        """
        return self._core.start_transfer("download_media", download_params(params), None, timeout)

    async def download(
        self, params: JSONData, into: Any, *, timeout: Optional[float] = None
    ) -> JSONData:
        """In-process: :meth:`download_media`, writing each chunk, in order, to ``into``: a
        file-like object (its ``write`` is awaited when it returns an awaitable, as
        ``aiofiles``' does) or a callable taking ``bytes`` (sync or async). Returns the
        reply (the cached file's row and path). An exception from ``into``, or cancelling the
        task, cancels the download.

        :raises RemoteError: the backend failed the download.
        :raises UnsupportedError: a websocket client, or a backend library without
            streaming download.
        """
        write = getattr(into, "write", None)
        if write is None:
            if not callable(into):
                raise TypeError("into must be a file-like object or a callable")
            write = into
        return await _run_transfer(self.download_media(params, timeout=timeout), write)

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

        gomuks: close code 1001 (if connected) frees the events the backend kept for this client;
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
