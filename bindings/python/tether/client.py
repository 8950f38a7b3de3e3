"""The blocking client: :class:`Client`."""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
)

from . import _base, _ffi
from ._base import (
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
    StateError,
    Status,
    TetherError,
    WrongModeError,
)
from .events import BatchReader, Event, EventKind, JSONLoads, event_from_pointer

if TYPE_CHECKING:
    # typing.Unpack for **kwargs needs Python 3.11; type checkers ship typing_extensions.
    from typing_extensions import Unpack

__all__ = ["Client", "PendingRequest"]

EventCallback = Callable[[Event], Any]


class PendingRequest:
    """A request in flight (from :meth:`Client.submit`). Its reply arrives exactly once: the
    result, the server's error, a timeout, a cancel, a disconnect or the client's close."""

    __slots__ = ("id", "_core", "_done", "_event")

    def __init__(self, core: "_SyncCore", request_id: int) -> None:
        self.id: int = request_id
        self._core = core
        self._done = threading.Event()
        self._event: Optional[Event] = None

    def _resolve(self, ev: Event) -> None:
        self._event = ev
        self._done.set()

    def done(self) -> bool:
        """Whether the reply (of any kind) has arrived."""
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits for the reply; returns whether it arrived within ``timeout`` seconds."""
        return self._done.wait(timeout)

    def result(self, timeout: Optional[float] = None) -> JSONData:
        """The reply's data parsed from JSON, or the mapped exception.

        :raises TimeoutError: nothing arrived within ``timeout`` seconds here (the request
            stays in flight; this is not the request's own timeout).
        :raises RemoteError: the server answered with an error (``.message`` is its text).
        :raises RequestTimeoutError: the request's timeout passed (the server was told).
        :raises RequestCancelledError: the request was cancelled.
        :raises DisconnectedError: the connection dropped first; the outcome is unknown.
        :raises ClientClosedError: the client was closed first.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.id}: no reply within {timeout} s")
        assert self._event is not None
        return response_result(self._event)

    @property
    def response(self) -> Optional[Event]:
        """The RESPONSE event once it arrived."""
        return self._event

    def cancel(self) -> bool:
        """Asks the library to cancel the request (the server is told). Returns ``False`` if
        the reply had already arrived. The reply then arrives as ``RequestCancelledError``,
        unless the server's answer won the race."""
        if self._done.is_set():
            return False
        try:
            self._core.cancel(self.id)
        except ClientClosedError:
            return False
        return True

    def __repr__(self) -> str:
        return f"<PendingRequest {self.id} {'done' if self.done() else 'pending'}>"


_STATE_KINDS = (EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CLOSED)

_registry: Dict[int, "_SyncCore"] = {}
_registry_ids = itertools.count(1)

# Marks the library's dispatcher threads (each runs only our callbacks): code there must
# never wait for another client's dispatcher, which may be waiting for this one.
_dispatcher = threading.local()


def _on_dispatcher() -> bool:
    return getattr(_dispatcher, "flag", False)


def _on_event_c(ctx: int, ev: int) -> None:
    core = _registry.get(ctx or 0)
    if core is None:
        return
    try:
        core.on_native_event(event_from_pointer(ev, core.event_cls))
    except BaseException:  # never let an exception reach the library's thread
        log.exception("tether: event callback failed")


def _on_destroy_c(ctx: int) -> None:
    core = _registry.pop(ctx or 0, None)
    if core is not None:
        core.destroyed.set()


# Module-level thunks: never freed, so the library can call them at any time until destroy.
_EVENT_THUNK = _ffi.EVENT_CB(_on_event_c)
_DESTROY_THUNK = _ffi.DESTROY_CB(_on_destroy_c)


class _SyncCore(CoreBase):
    def __init__(
        self,
        url: Optional[str],
        options: Mapping[str, object],
        event_queue_size: int,
        batch_size: int,
        on_event: Optional[EventCallback],
        json_loads: Optional[JSONLoads],
    ) -> None:
        super().__init__(url, options, event_queue_size, json_loads)
        self.batch_size = batch_size
        self.on_event = on_event
        self.pending: Dict[int, PendingRequest] = {}
        self.orphans: Dict[int, Event] = {}
        self.cond = threading.Condition(self.lock)
        self.queue: Deque[Event] = deque()
        self.reader_blocked = False  # the reader waits for room in the queue
        self.ended = False  # CLOSED was queued (no more events will come)
        # Who frees: if a close came first (free_on_closed), the delivery thread when it
        # ends (in callback mode through a helper thread); else the close that finds it
        # ended (delivery_done). Both flags are read and set under the lock.
        self.free_on_closed = False
        self.delivery_done = False
        self.replies_ended = False  # pending requests were failed: fail newcomers too
        self.destroyed = threading.Event()
        self.closed_event = threading.Event()
        self.reader: Optional[threading.Thread] = None
        self.ctx = 0

    def start(self) -> None:
        if self.on_event is not None:
            self.ctx = next(_registry_ids)
            _registry[self.ctx] = self
            try:
                _ffi.check(
                    self.call(
                        _ffi.lib.tether_client_set_event_callback,
                        _EVENT_THUNK,
                        self.ctx,
                        _DESTROY_THUNK,
                    ),
                    "set_event_callback",
                )
            except BaseException:
                _registry.pop(self.ctx, None)
                raise
        else:
            self.reader = threading.Thread(
                target=self.run_reader, name="tether-python-reader", daemon=True
            )
            self.reader.start()
        self.connect()

    def queued_here(self) -> int:
        return len(self.queue)

    # -- delivery --------------------------------------------------------------------------

    def run_reader(self) -> None:
        """Poll mode: one thread takes batches (GIL released while it waits) and routes them."""
        self.delivery_ident = threading.get_ident()
        reader = BatchReader(self.batch_size, self.event_cls)
        try:
            while True:
                try:
                    st, events = self.handle.call(reader.poll, -1)
                except ClientClosedError:
                    break
                if st != Status.OK:
                    break
                self.deliver(events)
                if self.closed:
                    break
                if len(self.queue) >= self.queue_limit:
                    with self.cond:
                        # next_event() pops without the lock and notifies only when it
                        # sees this flag, which is set before the length is checked again.
                        self.reader_blocked = True
                        while len(self.queue) >= self.queue_limit and not self.closing:
                            self.cond.wait()
                        self.reader_blocked = False
        except TetherError as e:  # panic or fork: the client is unusable
            self.fatal = e
            log.error("tether: event reader stopped: %s", e)
        finally:
            reader.free()
            self.finish()
            self.delivery_ended()

    def on_native_event(self, ev: Event) -> None:
        """Callback mode: runs on the library's dispatcher thread."""
        if self.delivery_ident is None:
            self.delivery_ident = threading.get_ident()
            _dispatcher.flag = True
        self.deliver([ev])
        if ev.kind == EventKind.CLOSED:
            self.finish()
            self.delivery_ended()

    def delivery_ended(self) -> None:
        """On the delivery thread, after its last event: frees if a close asked for it."""
        with self.lock:
            self.delivery_done = True
            free = self.free_on_closed
        if not free:
            return
        if self.reader is not None:
            self.free()
            return
        # Not on the dispatcher itself: there tether_client_free returns before the thread
        # ends (destroy still to run), while from another thread it joins it. So once
        # `freed` is set no callback of this client can run any more, which interpreter exit
        # relies on (a callback into a finalizing interpreter aborts the process).
        try:
            threading.Thread(target=self.free, name="tether-python-free", daemon=True).start()
        except RuntimeError:  # no new threads at interpreter shutdown
            self.free()

    def free_when_delivery_ends(self) -> bool:
        """Hands the free to the delivery thread, to happen when it ends (after CLOSED), so
        no caller waits for it. Returns ``True`` if delivery has already ended: the caller
        frees then (nothing runs that the free would wait for)."""
        with self.lock:
            if self.delivery_done:
                return True
            self.free_on_closed = True
            _strong.add(self)  # alive until the delivery thread frees it
            return False

    def deliver(self, events: Sequence[Event]) -> None:
        ready: List[Event] = []
        state_changed = False
        for ev in events:
            kind = ev.kind
            if kind == EventKind.RESPONSE:
                self.resolve(ev)
                continue
            if kind in _STATE_KINDS:
                self.note(ev)
                state_changed = True
            if self.on_event is not None:
                try:
                    self.on_event(ev)
                except Exception:
                    log.exception("tether: on_event raised")
            else:
                ready.append(ev)
        if not ready and not state_changed:
            return
        # One lock and one notify per batch: the consumer's wake-up is the dear part.
        with self.cond:
            self.queue.extend(ready)
            if ready and ready[-1].kind == EventKind.CLOSED:
                self.ended = True
            self.cond.notify_all()  # next_event(), wait_connected()

    def resolve(self, ev: Event) -> None:
        with self.lock:
            waiter = self.pending.pop(ev.request_id, None)
            if waiter is None:
                # The reply beat start_request's bookkeeping; keep it for submit().
                self.orphans[ev.request_id] = ev
                while len(self.orphans) > 1024:
                    self.orphans.pop(next(iter(self.orphans)))
        if waiter is not None:
            waiter._resolve(ev)

    def finish(self) -> None:
        """Delivery ended: wake everyone, fail requests that can no longer be answered."""
        with self.cond:
            self.ended = True
            self.cond.notify_all()
        self.closed_event.set()
        self.fail_pending()

    def fail_pending(self) -> None:
        """Fails every request still waiting, and any registered later, with
        ``ClientClosedError``: after a close that did not wait for CLOSED, or once nothing
        can arrive any more."""
        with self.lock:
            self.replies_ended = True
            waiters = list(self.pending.values())
            self.pending.clear()
        for w in waiters:
            if not w.done():
                w._resolve(Event(EventKind.RESPONSE, w.id, Status.ERR_CLIENT_CLOSED, "", b""))

    # -- requests --------------------------------------------------------------------------

    def submit(self, command: str, data: JSONData, timeout: Optional[float]) -> PendingRequest:
        rid = self.start_request(command, data, timeout)
        p = PendingRequest(self, rid)
        with self.lock:
            early = self.orphans.pop(rid, None)
            if early is None:
                if self.ended or self.replies_ended:
                    early = Event(EventKind.RESPONSE, rid, Status.ERR_CLIENT_CLOSED, "", b"")
                else:
                    self.pending[rid] = p
        if early is not None:
            p._resolve(early)
        return p

    # -- events ----------------------------------------------------------------------------

    def next_event(self, timeout: Optional[float]) -> Optional[Event]:
        if self.on_event is not None:
            raise WrongModeError(
                "this client delivers events to on_event; events() is not available",
                Status.ERR_WRONG_MODE,
            )
        ev = self.take_ready()
        if ev is not None:
            return ev
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            while not self.queue:
                if self.ended:
                    return None
                if deadline is None:
                    self.cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    self.cond.wait(left)
            ev = self.queue.popleft()
            if self.reader_blocked:
                self.cond.notify_all()
            return ev

    def take_ready(self) -> Optional[Event]:
        """An event already queued, taken without waiting or locking; ``None`` if none.
        deque.popleft is atomic under the GIL and the reader appends under the lock, so an
        event seen here is complete."""
        try:
            ev = self.queue.popleft()
        except IndexError:
            return None
        if self.reader_blocked:
            with self.cond:
                self.cond.notify_all()  # the reader waits for room
        return ev

    # -- closing ---------------------------------------------------------------------------

    def on_delivery_thread(self) -> bool:
        return self.delivery_ident is not None and threading.get_ident() == self.delivery_ident

    def close(self, timeout: Optional[float], keep_resume: bool) -> None:
        self.check_pid()
        if not self.handle.live:
            return
        self.close_native(keep_resume)
        with self.cond:
            self.cond.notify_all()  # a reader waiting for room goes on
        # tether_client_free waits for a running callback, and the reader may sit in a poll:
        # the delivery thread frees when CLOSED has passed; this call only waits for that.
        if self.free_when_delivery_ends():
            self.free()
            return
        if self.on_delivery_thread():
            return  # inside on_event (or a collection on the reader): CLOSED comes after
        if self.on_event is not None and _on_dispatcher():
            # Inside another client's callback: this client's dispatcher may be waiting for
            # ours (each closing the other), so do not wait for it at all.
            self.fail_pending()
            return
        if self.reader is not None:
            self.reader.join(timeout)
        else:
            self.freed.wait(timeout)
        if not self.freed.is_set():
            log.warning("tether: CLOSED did not arrive in %s s; freeing later", timeout)
            self.fail_pending()

    def close_from_gc(self) -> None:
        """The Client object was collected without close(): close without waiting."""
        if self.pid != os.getpid() or not self.handle.live:
            return
        try:
            self.close_native()
            with self.cond:
                self.cond.notify_all()
            if self.free_when_delivery_ends():
                self.free()
        except TetherError:
            pass

    def begin_exit(self) -> bool:
        if self.freed.is_set() or self.on_delivery_thread():
            return False
        if not self.handle.live:
            return True  # being freed on another thread: end_exit waits for it
        self.close_native(keep_resume=True)
        with self.cond:
            self.cond.notify_all()
        if self.free_when_delivery_ends():
            self.free()
            return False
        return True

    def end_exit(self, deadline: float) -> bool:
        left = max(0.0, deadline - time.monotonic())
        if self.reader is not None:
            # A reader still inside its poll cannot be freed under it: it frees if CLOSED
            # comes before the process ends.
            self.reader.join(left)
        elif not self.freed.wait(left):
            # No callback may run into a finalizing interpreter: free now, which joins the
            # dispatcher (after a callback that is running, if any); or, if another thread
            # is freeing it, wait for that join (CLOSED has passed: only destroy is left).
            if not self.free():
                self.freed.wait()
        self.fail_pending()
        return self.ended

    def abort(self) -> None:
        """start() failed: release what exists without waiting for events."""
        try:
            self.close_native()
        except TetherError:
            pass
        with self.cond:
            self.cond.notify_all()
        if self.reader is not None:
            self.reader.join(2.0)
            if not self.free_when_delivery_ends():
                return  # the reader frees when it ends
        self.free()


class Client(ClientState):
    """A blocking client for one backend, kept connected and resumed by the library.

    The connection starts at once, in the background. Events other than replies go to
    :meth:`events` (or to ``on_event``); :meth:`request` blocks its caller only, with the
    GIL released. Use it as a context manager, or call :meth:`close`.

    :param url: ``http(s)://host:port`` (the backend's base; the dialect's paths are derived)
        or the websocket endpoint ``ws(s)://...``; ``None`` (or left out) with the
        ``in_process`` option, which drives the gomuks backend bundled into this process
        instead (``Client(in_process=(library_path, data_root))``).
    :param options: the connection options of :class:`tether.Options` (``protocol``,
        ``token``, ``username``/``password``, ``ping_interval``, ``resume``, ``headers``,
        ...), each with its default and documentation there.
    :param on_event: callback mode: ``on_event(event)`` runs on the library's dispatcher
        thread for every event except replies (which still complete requests), in order.
        Keep it short; it is kept referenced until the library is done with it.
    :param event_queue_size: poll mode: events buffered in Python before the reader stops
        taking more (the library then applies TCP backpressure). Replies wait behind them,
        so consume :meth:`events` or use ``on_event``.
    :param batch_size: events taken per native call.
    :param json_loads: the parser behind ``Event.data`` and :meth:`request`'s result, called
        with the payload's bytes (default ``json.loads``). E.g. ``orjson.loads``, about 4x
        faster on gomuks events (``pip install "tether[fast]"``); mind its semantics: it
        turns integers beyond 64 bits into floats and refuses ``NaN`` and lone surrogates.
    :raises ConfigError: the configuration is invalid (see the message).
    :raises TypeError: a keyword argument that is not an option.
    """

    _core: _SyncCore

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        on_event: Optional[EventCallback] = None,
        event_queue_size: int = 10000,
        batch_size: int = 256,
        json_loads: Optional[JSONLoads] = None,
        **options: Unpack[Options],
    ) -> None:
        check_options("Client", options)
        self._core = core = _SyncCore(
            url, options, event_queue_size, batch_size, on_event, json_loads
        )
        try:
            core.start()
        except BaseException:
            core.abort()
            raise
        self._finalizer = weakref.finalize(self, core.close_from_gc)
        self._finalizer.atexit = False  # at exit, tether's own handler closes and waits

    # -- requests --------------------------------------------------------------------------

    def request(
        self, command: str, data: JSONData = None, *, timeout: Optional[float] = None
    ) -> JSONData:
        """Sends ``command`` with ``data`` and blocks until the reply; returns the reply's
        data parsed from JSON (a ``dict`` for most commands).

        ``data`` is any JSON-serialisable value (``None`` sends ``{}``) or ``bytes`` of JSON.
        ``timeout`` (seconds) overrides the client's request timeout; when it passes the
        server is told to cancel. An interrupt (``KeyboardInterrupt``) cancels it too.

        :raises RemoteError: the server answered with an error (``.message`` is its text).
        :raises RequestTimeoutError: no reply in time.
        :raises DisconnectedError: the connection dropped first; the outcome is unknown.
        :raises ClientClosedError: the client is (or got) closed.
        :raises StateError: not possible on this client (rwws has no requests; or called
            inside ``on_event``, where replies cannot arrive: use :meth:`submit` there).
        """
        core = self._core
        if core.on_event is not None and core.on_delivery_thread():
            raise StateError(
                "request() inside on_event would wait forever (replies are delivered on this "
                "thread); use submit()",
                Status.ERR_STATE,
            )
        p = core.submit(command, data, timeout)
        bound = (timeout if timeout is not None else core.request_timeout) + REQUEST_GRACE_S
        try:
            arrived = p.wait(bound)
        except BaseException:
            p.cancel()
            raise
        if not arrived:
            p.cancel()
            raise RequestTimeoutError(
                f"request {command!r}: no reply within {bound:.1f} s", request_id=p.id
            )
        return p.result(0)

    def submit(
        self, command: str, data: JSONData = None, *, timeout: Optional[float] = None
    ) -> PendingRequest:
        """Sends a request without waiting; returns a :class:`PendingRequest` to wait on or
        cancel. Safe inside ``on_event``."""
        return self._core.submit(command, data, timeout)

    def cancel(self, request_id: int) -> None:
        """Cancels request ``request_id`` (its reply arrives as ``RequestCancelledError``)."""
        self._core.cancel(request_id)

    def send_packet(self, packet: bytes) -> None:
        """rwws: sends one raw packet (queued while disconnected)."""
        self._core.send_packet(packet)

    def send_settings(self, settings: Sequence[Tuple[int, bytes]]) -> None:
        """rwws: sends one Settings packet with ``(id, value)`` pairs."""
        self._core.send_settings(settings)

    # -- events ----------------------------------------------------------------------------

    def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event (never a RESPONSE), waiting up to ``timeout`` seconds (``None``:
        until one arrives). Returns ``None`` on timeout, and at once after CLOSED was taken.

        :raises WrongModeError: the client was created with ``on_event``.
        """
        core = self._core
        # Per-event path: the at-fork flag stands in for getpid() (a syscall) while events are
        # queued; the waiting path below checks the pid as well.
        if not _base._forked_child:
            ev = core.take_ready()
            if ev is not None:
                return ev
        core.check_pid()
        return core.next_event(timeout)

    def events(self, timeout: Optional[float] = None) -> Iterator[Event]:
        """Iterates over events until CLOSED (which is yielded last). With ``timeout``, the
        iteration also ends once ``timeout`` seconds have passed since it started (a
        deadline for the whole loop, not an idle time: keepalive pongs keep arriving)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ev = self.next_event(left)
            if ev is None:
                return
            yield ev
            if ev.kind == EventKind.CLOSED:
                return

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def wait_connected(self, timeout: Optional[float] = None) -> None:
        """Waits (without consuming events) until the client is connected.

        :raises TimeoutError: not connected within ``timeout`` seconds.
        :raises ConnectionFailedError: the connection ended for good, e.g.
            :class:`UnauthorizedError` for a refused login (the same error as ``fatal``).
        :raises ClientClosedError: the client was closed.
        """
        core = self._core
        core.check_pid()
        with core.cond:
            core.cond.wait_for(
                lambda: core.connected
                or core.fatal is not None
                or core.closed
                or core.ended
                or core.closing,
                timeout,
            )
        if core.connected:
            return
        if core.fatal is not None or core.closed or core.ended or core.closing:
            raise core.connect_error()
        raise TimeoutError(f"not connected within {timeout} s")

    # -- closing -----------------------------------------------------------------------------

    def close(self, timeout: Optional[float] = 10.0, *, keep_resume: bool = False) -> None:
        """Closes gracefully and waits up to ``timeout`` seconds for the library to finish
        (CLOSED delivered, native client freed); it never waits longer, even for a slow
        ``on_event``: the native client is then freed once CLOSED has been delivered. Inside
        an ``on_event`` callback it does not wait for a client in callback mode (that
        client's callback may be waiting for this one). Pending requests have failed with
        :class:`ClientClosedError` when it returns; queued events can still be read, and
        ``on_event`` still receives every event up to CLOSED. Idempotent.

        gomuks: close code 1001, so the backend frees the events it kept for this client.
        With ``keep_resume=True`` the code is 1000 and the backend keeps them, so a later
        client given :meth:`resume_state` receives what it missed (a client that is only
        garbage-collected also closes this way)."""
        self._core.close(timeout, keep_resume)
        self._finalizer.detach()  # the core is freed, or frees itself after CLOSED

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("connected" if self.connected else "connecting")
        return f"<tether.Client {state}>"
