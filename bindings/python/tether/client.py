"""The blocking client: :class:`Client`."""

from __future__ import annotations

import itertools
import math
import os
import select
import threading
import time
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    BinaryIO,
    Callable,
    Deque,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Union,
)

from . import _base, _ffi
from ._signals import rescan_signals, signals_held
from ._base import (
    REQUEST_GRACE_S,
    BytesLike,
    ClientState,
    CoreBase,
    JSONData,
    RequestInFlight,
    _strong,
    call_app,
    download_params,
    keep_first,
    log,
    pass_on,
    response_result,
    start_thread,
    upload_params,
)
from ._options import Options, PathArg, check_options, in_resolver
from .errors import (
    ClientClosedError,
    RequestTimeoutError,
    StateError,
    Status,
    TetherError,
    WrongModeError,
)
from .events import BatchReader, Event, EventKind, JSONLoads, event_from_pointer
from .store import Store, StoreOptions

if TYPE_CHECKING:
    # typing.Unpack for **kwargs needs Python 3.11; type checkers ship typing_extensions.
    from typing_extensions import Unpack

__all__ = ["Client", "PendingRequest", "Transfer"]

EventCallback = Callable[[Event], Any]
#: Where :meth:`Client.download` puts the chunks: a binary file-like object (its ``write``
#: is called) or a callable taking each chunk's bytes.
ChunkSink = Union[BinaryIO, Callable[[bytes], Any]]


class PendingRequest(RequestInFlight):
    """A request in flight (from :meth:`Client.submit`). Its reply arrives exactly once: the
    result, the server's error, a timeout, a cancel, a disconnect or the client's close."""

    __slots__ = ("id", "_core", "_done", "_event", "_deadline", "_expired")

    def __init__(self, core: "_SyncCore", request_id: int, deadline: Optional[float] = None) -> None:
        self.id: int = request_id
        self._core = core
        self._done = threading.Event()
        self._event: Optional[Event] = None
        # time.monotonic() past which no reply can come any more: the request's timeout and
        # a grace period (None: no bound, for a reply already in).
        self._deadline = deadline
        self._expired = False  # the deadline passed and the request was cancelled

    def _resolve(self, ev: Event) -> None:
        self._event = ev
        self._done.set()

    def done(self) -> bool:
        """Whether the reply (of any kind) has arrived."""
        return self._done.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Waits for the reply; returns whether it arrived within ``timeout`` seconds, and
        never waits past the request's own timeout and a grace period (as :meth:`Client.request`):
        by then its reply is queued behind events nobody took (the queue is full, and this
        thread is the one that should take them), so the request is cancelled and this
        returns ``False``.

        :raises StateError: inside ``on_event``, where the reply cannot arrive while it waits.
        """
        return self._core.wait_done(self, timeout)

    def result(self, timeout: Optional[float] = None) -> JSONData:
        """The reply's data parsed from JSON, or the mapped exception.

        :raises TimeoutError: nothing arrived within ``timeout`` seconds here (the request
            stays in flight; this is not the request's own timeout).
        :raises RemoteError: the server answered with an error (``.message`` is its text).
        :raises RequestTimeoutError: the request's timeout passed (the server was told), also
            when its reply could not get here in time (see :meth:`wait`).
        :raises StateError: waiting inside ``on_event`` (see :meth:`wait`).
        :raises RequestCancelledError: the request was cancelled.
        :raises DisconnectedError: the connection dropped first; the outcome is unknown.
        :raises ClientClosedError: the client was closed first.
        """
        if not self.wait(timeout):
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise RequestTimeoutError(
                    f"request {self.id}: no reply in time", request_id=self.id
                )
            raise TimeoutError(f"request {self.id}: no reply within {timeout} s")
        assert self._event is not None
        return response_result(self._event)

    @property
    def response(self) -> Optional[Event]:
        """The RESPONSE event once it arrived."""
        return self._event

    def __repr__(self) -> str:
        return f"<PendingRequest {self.id} {'done' if self.done() else 'pending'}>"


class Transfer(PendingRequest):
    """A media upload or download in flight (from :meth:`Client.upload_media` or
    :meth:`Client.download_media`): a :class:`PendingRequest` whose progress reports
    (upload: floats, as the backend reports them: a fraction from 0 to 1 for gomuks v0.2607.0) or chunks (download: ``bytes``, in order) are read by
    iterating it, on the iterating thread; the iteration ends once all have been read and the
    reply arrived. ``result()`` then gives the reply's data (upload: the ``m.room.message``
    content to send; download: the cached file's row and path) or raises.

    Reports not read yet are held in memory (the library does not hold the backend back
    either). Leaving the loop early (``break``, an exception) or calling ``result()`` stops
    the stream: what was not read is dropped, and the request goes on to its reply (call
    :meth:`cancel` to give up on it). Past the request's timeout (plus a grace period, as
    :meth:`Client.request`) the iteration cancels it and raises ``RequestTimeoutError``.
    """

    __slots__ = ("what", "_items", "_streaming")

    def __init__(self, core: "_SyncCore", request_id: int, what: str, deadline: float) -> None:
        super().__init__(core, request_id, deadline)
        #: ``"upload_media"`` or ``"download_media"``.
        self.what: str = what
        self._items: Deque[Event] = deque()
        self._streaming = True

    def _push(self, ev: Event) -> None:
        """The delivering thread, under the core's lock: one PROGRESS or CHUNK of this
        request."""
        if self._streaming:
            self._items.append(ev)

    def _resolve(self, ev: Event) -> None:
        super()._resolve(ev)
        with self._core.cond:
            self._core.cond.notify_all()  # an iterating thread waits on the core's condition

    def _stop(self) -> None:
        # No lock: this runs when a generator is collected, which may happen on the delivery
        # thread while it holds the lock. A report pushed in between stays until the
        # Transfer goes; nothing reads it.
        self._streaming = False
        self._items.clear()

    def __iter__(self) -> Iterator[Any]:
        """Progress (upload, ``float``) or chunks (download, ``bytes``) in order, until the
        reply arrived.

        :raises RequestTimeoutError: no reply within the request's timeout and a grace period
            (the request is cancelled).
        :raises StateError: inside ``on_event`` (the reports are delivered on that thread).
        """
        core = self._core
        core.check_can_wait(self.what)
        try:
            while True:
                ev = core.next_item(self)
                if ev is None:
                    return
                yield ev.raw if ev.kind == EventKind.CHUNK else ev.progress
        finally:
            self._stop()

    def result(self, timeout: Optional[float] = None) -> JSONData:
        """Stops the stream (unread reports are dropped), then as
        :meth:`PendingRequest.result`."""
        self._stop()
        return super().result(timeout)

    def __repr__(self) -> str:
        return f"<Transfer {self.what} {self.id} {'done' if self.done() else 'pending'}>"


def _run_transfer(t: Transfer, each: Optional[Callable[[Any], Any]]) -> JSONData:
    """Reads ``t`` to its end on this thread, calling ``each`` with every report; returns its
    result. Anything raised meanwhile (by ``each``, an interrupt) cancels the request."""
    try:
        for item in t:
            if each is not None:
                each(item)
    except BaseException:
        try:
            t.cancel()
        except TetherError:  # closed meanwhile: what was raised matters, not this
            pass
        raise
    return t.result(0)


#: How long the reader thread stays away from the library's queue after another thread last
#: polled it or waited for it: an app that iterates ``events()`` polls for every batch itself,
#: and a batch taken by the reader in between would reach it through a thread hand-off.
HANDOFF_GRACE_S = 0.1

#: How long a thread about to wait for the library's descriptor first checks it while giving
#: its core to any other thread that wants it (sched_yield), before it sleeps in poll(2). On a
#: 2-core VM, unpinned, a blocking request() then took 80-88 µs instead of 145-195 µs at the
#: median (a core that went idle is slow to wake); where the client shares one core with the
#: server the yield lets them run and the figure stays (47-51 µs); pinned apart, 120-125 µs
#: instead of 111-115 µs. Gains level off from 20 µs on. Without sched_yield it does not spin.
SPIN_S = 30e-6 if hasattr(os, "sched_yield") else 0.0


def _put_back(queue: Deque[Event], ev: Optional[Event]) -> None:
    """After an exception (a signal handler's) as ``ev``, read at the front of ``queue``, was
    being taken off it: puts it back in front, unless it is still there (or was never read)."""
    if ev is not None and (not queue or queue[0] is not ev):
        queue.appendleft(ev)


def _timeout_ms(seconds: float) -> int:
    """A wait in whole milliseconds, rounded up (a wait never ends early), within int32."""
    return min(max(0, math.ceil(seconds * 1000)), 2**31 - 1)


class _Waiter:
    """Waits until the library's event descriptor is readable (events are queued), with
    poll(2): a signal interrupts it (``KeyboardInterrupt`` in the main thread), and another
    thread can end it early through a pipe. Only the thread holding the token waits."""

    __slots__ = ("_poll", "_r", "_w")

    @classmethod
    def open(cls, handle: "_base.Handle") -> Optional["_Waiter"]:
        """A waiter for the client's descriptor, or ``None`` where there is none (no
        ``select.poll``, or the library could not create one): the token holder then waits
        in the library's poll, which nothing interrupts."""
        if not hasattr(select, "poll"):
            return None
        fd = handle.call(_ffi.lib.tether_client_event_fd)
        if fd < 0:
            log.debug("tether: no event descriptor (%s); polling instead", _ffi.last_error())
            return None
        return cls(fd)

    def __init__(self, fd: int) -> None:
        self._r, self._w = os.pipe()
        try:
            os.set_blocking(self._r, False)
            os.set_blocking(self._w, False)
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
            self._poll.register(self._r, select.POLLIN)
        except BaseException:
            self.close()
            raise

    def wait(self, timeout: Optional[float]) -> None:
        """Until events are queued, :meth:`wake` is called, or ``timeout`` seconds passed
        (after up to :data:`SPIN_S` of checking first)."""
        ready = self._spin(timeout)
        if not ready:
            ready = self._poll.poll(None if timeout is None else _timeout_ms(timeout))
        for fd, _ in ready:
            if fd == self._r:
                try:
                    while os.read(self._r, 64):
                        pass
                except BlockingIOError:
                    pass

    def _spin(self, timeout: Optional[float]) -> List[Tuple[int, int]]:
        """What poll(2) finds ready within :data:`SPIN_S` (capped by ``timeout``), checked
        without sleeping between yields of the core; ``[]`` if nothing."""
        poll = self._poll.poll
        ready: List[Tuple[int, int]] = poll(0)
        if ready or not SPIN_S:
            return ready
        end = time.perf_counter() + (SPIN_S if timeout is None else min(SPIN_S, timeout))
        while not ready and time.perf_counter() < end:
            os.sched_yield()
            ready = poll(0)
        return ready

    def wake(self) -> None:
        """Ends the current (or next) :meth:`wait` early. Any thread."""
        try:
            os.write(self._w, b"\0")
        except BlockingIOError:  # the pipe is full: a wake-up is pending anyway
            pass

    def close(self) -> None:
        """Closes the pipe (the library closes the descriptor when the client is freed)."""
        os.close(self._r)
        os.close(self._w)


_STATE_KINDS = (EventKind.CONNECTED, EventKind.DISCONNECTED, EventKind.CLOSED)
_TRANSFER_KINDS = (EventKind.PROGRESS, EventKind.CHUNK)

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
        # The reader thread waits here, woken only by what it acts on (the end, a close, room
        # in the queue: wake_all; the token's return while it waits for the token), not by
        # every delivery and every return of the token: those woke it twice per batch, and
        # each wake-up made it take the GIL from the thread consuming the events.
        self.reader_cond = threading.Condition(self.lock)
        self.reader_wants_token = False  # the reader waits for the token (under the lock)
        self.queue: Deque[Event] = deque()
        # A thread waits for room in the queue (the reader thread, or a thread that would
        # poll the library for a reply): taking an event must wake it.
        self.room_wanted = False
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
        # Poll mode: whichever thread waits polls the library itself (see wait_until). The
        # token is held while polling, delivering, and waiting on the event descriptor, so
        # batches are delivered in the order they were taken.
        self.token = threading.Lock()
        # The thread holding the token (the reader or an app thread): what it delivers
        # (on_change) runs on it, so a wait there for a reply or a change would wait for
        # itself.
        self.token_holder: Optional[int] = None
        self.batch: Optional[BatchReader] = None
        self.waiter: Optional[_Waiter] = None
        self.reader_holds = False  # the reader thread holds the token
        self.last_taken = 0.0  # when a thread other than the reader last held the token

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
                # A refused call has run destroy, which popped it, except after fork.
                _registry.pop(self.ctx, None)
                raise
        else:
            self.batch = BatchReader(self.batch_size, self.event_cls)
            try:
                self.waiter = _Waiter.open(self.handle)
                self.reader = threading.Thread(
                    target=self.run_reader, name="tether-python-reader", daemon=True
                )
                self.reader.start()
            except BaseException:
                self.reader = None
                self.batch.free()
                if self.waiter is not None:
                    self.waiter.close()
                raise
        self.connect()

    def queued_here(self) -> int:
        return len(self.queue)

    def held_events(self) -> Sequence[Event]:
        # Copied in one step under the GIL: the reader may append meanwhile.
        return tuple(self.queue)

    # -- delivery --------------------------------------------------------------------------

    def run_reader(self) -> None:
        """Poll mode: delivers events while no other thread waits for them, so replies,
        state changes and up to ``event_queue_size`` events arrive while the app is busy
        elsewhere. A thread that waits itself (``events()``, ``request()``, ...) polls on its
        own and the reader stays out of its way: a hand-off between two Python threads
        costs more than the events it carries."""
        self.delivery_ident = threading.get_ident()
        cond = self.cond
        waits = self.reader_cond
        try:
            while True:
                with cond:
                    while not self.ended:
                        if self.token.locked():
                            if time.monotonic() - self.last_taken < HANDOFF_GRACE_S:
                                # A thread is consuming and hands the token back once per
                                # batch: look again when it could have stopped, rather than
                                # be woken at every return.
                                waits.wait(HANDOFF_GRACE_S)
                            else:
                                # A thread waits for events with the token: woken when it
                                # gives the token back.
                                self.reader_wants_token = True
                                waits.wait()
                                self.reader_wants_token = False
                        elif len(self.queue) >= self.queue_limit and not self.closing:
                            # Set before the length is read again: a consumer pops without
                            # the lock, then notifies only if it sees the flag.
                            self.room_wanted = True
                            if len(self.queue) >= self.queue_limit:
                                waits.wait()
                        else:
                            idle = self.last_taken + HANDOFF_GRACE_S - time.monotonic()
                            if idle <= 0 or self.closing:
                                break
                            waits.wait(idle)
                    if self.ended:
                        break
                if not self.token.acquire(blocking=False):
                    continue
                self.token_holder = self.delivery_ident
                try:
                    with cond:
                        self.reader_holds = True
                    while self.reader_may_go_on():
                        self.take(None)
                finally:
                    with cond:
                        self.reader_holds = False
                    self.token_holder = None
                    self.token.release()
                    self.token_released(by_reader=True)
        finally:
            # Normally delivery has ended here (CLOSED was taken); after an unexpected error
            # this ends it, so no thread waits for events that nobody would deliver.
            self.finish()
            with self.cond:
                if self.waiter is not None:
                    self.waiter.wake()  # a thread still waiting on the descriptor sees the end
            with self.token:  # then nobody polls any more
                if self.batch is not None:
                    self.batch.free()
                with self.cond:  # wake() is only called under the lock
                    w, self.waiter = self.waiter, None
                    if w is not None:
                        w.close()
            self.delivery_ended()

    def reader_may_go_on(self) -> bool:
        """Whether the reader, holding the token, waits for the next batch: not once another
        thread asked for the token, nor while the queue is full."""
        with self.cond:
            if self.ended:
                return False
            if self.last_taken + HANDOFF_GRACE_S > time.monotonic() and not self.closing:
                return False
            return len(self.queue) < self.queue_limit or self.closing

    def wake_all(self) -> None:
        """Under the lock: wakes every waiting thread, the reader among them."""
        self.cond.notify_all()
        self.reader_cond.notify_all()

    def token_released(self, by_reader: bool = False) -> None:
        """Right after the token was released: lets whoever waits for it go on."""
        with self.cond:
            if not by_reader:
                # The grace period runs from the end of this thread's wait, not its start: a
                # long wait for one event must not hand the next batch to the reader.
                self.last_taken = time.monotonic()
            self.cond.notify_all()  # threads waiting for the token, or for what was delivered
            if self.reader_wants_token:
                self.reader_cond.notify_all()

    def take(self, timeout: Optional[float]) -> None:
        """Holding the token: moves what the library has queued to this binding, waiting up
        to ``timeout`` seconds (``None``: no limit) for it. The wait ends early when a waiter
        asks the reader thread for the token, when pending requests fail, or (main thread)
        for a signal such as ``KeyboardInterrupt``; taking and delivering is never
        interrupted (see _signals.signals_held)."""
        if not self.pump(0):
            self.wait_and_take(timeout)

    def wait_and_take(self, timeout: Optional[float]) -> None:
        """``take`` once nothing was queued: waits for the library, then takes."""
        w = self.waiter
        if w is None:  # no descriptor: the library's own wait (not interruptible)
            self.pump(-1 if timeout is None else _timeout_ms(timeout))
            return
        w.wait(timeout)
        self.pump(0)

    def pump(self, timeout_ms: int) -> bool:
        """Holding the token: one batch from the library, delivered. Returns whether
        anything happened (events delivered, or delivery ended)."""
        assert self.batch is not None
        with signals_held():
            return self.pump_held(timeout_ms)

    def pump_held(self, timeout_ms: int) -> bool:
        assert self.batch is not None
        try:
            st, events = self.handle.call(self.batch.poll, timeout_ms)
        except ClientClosedError:
            self.finish()
            return True
        except TetherError as e:  # panic or fork: the client is unusable
            self.fatal = e
            log.error("tether: event delivery stopped: %s", e)
            self.finish()
            return True
        if st == Status.TIMEOUT:
            return False
        if st == Status.OK:
            deferred = self.deliver(events)
            self.batch.delivered()
            if self.closed:
                self.finish()  # CLOSED was taken
            pass_on(deferred, threading.get_ident() != self.delivery_ident)
            return True
        self.finish()
        return True

    def wait_until(
        self, ready: Callable[[], bool], deadline: Optional[float], consumer: bool = False
    ) -> bool:
        """Waits until ``ready()`` (called under the lock) or ``deadline``
        (``time.monotonic()``; ``None``: no limit); returns ``ready()``. In poll mode the
        waiting thread polls the library itself whenever no other thread does, so what it
        waits for is delivered on this very thread. A ``consumer`` takes events out of the
        queue, so it may poll while the queue is full; other waiters would only fill it."""
        me = threading.get_ident()
        cond = self.cond
        while True:
            with cond:
                if ready():
                    return True
                if self.ended:
                    return ready()
                left = None
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                if self.token_holder == me:
                    # Inside on_change on the thread delivering events: nobody else would.
                    raise StateError(
                        "waiting inside an on_change callback would wait forever (this thread "
                        "is delivering the client's events)",
                        Status.ERR_STATE,
                    )
                full = not consumer and len(self.queue) >= self.queue_limit and not self.closing
                if full:
                    self.room_wanted = True  # then read the length again (see run_reader)
                    full = len(self.queue) >= self.queue_limit
                if self.batch is None or full or self.token.locked():
                    if not full and self.reader_holds and self.waiter is not None:
                        self.waiter.wake()  # the reader gives the token up
                    self.last_taken = time.monotonic()
                    cond.wait(left)
                    continue
                self.last_taken = time.monotonic()
            took = taken = False
            try:
                # CPython runs a signal handler right after a call returns: one that raised
                # (Ctrl-C) as acquire returned would leave the token taken by nobody, and
                # every later wait on this client stuck. Held back here, it raises at the
                # end of the block, with `took` set.
                with signals_held():
                    took = self.token.acquire(blocking=False)
                    if took:
                        self.token_holder = me
                        # What is queued already is taken under the same hold: one per batch.
                        taken = self.ended or self.pump_held(0)
                if took and not taken:
                    self.wait_and_take(left)
            finally:
                if took:
                    # No call before the release; a handler that raises as release returns
                    # still lets the waiters know.
                    self.token_holder = None
                    try:
                        self.token.release()
                    finally:
                        self.token_released()

    def wait_done(self, p: "PendingRequest", timeout: Optional[float]) -> bool:
        """Waits up to ``timeout`` seconds for ``p``'s reply, and no longer than its deadline
        (then it is cancelled)."""
        if p._done.is_set():
            return True
        if timeout is None or timeout > 0:
            self.check_can_wait(f"request {p.id}")
        now = time.monotonic()
        deadline = None if timeout is None else now + timeout
        if p._deadline is not None and (deadline is None or p._deadline < deadline):
            deadline = p._deadline
        if self.batch is None:  # callback mode: the dispatcher resolves it
            arrived = p._done.wait(None if deadline is None else max(0.0, deadline - now))
        else:
            arrived = self.wait_until(p._done.is_set, deadline)
        if not arrived and p._deadline is not None and time.monotonic() >= p._deadline:
            if not p._expired:  # once: a caller that asks again must not resend the cancel
                p._expired = True
                try:
                    p.cancel()
                except TetherError:  # the client broke meanwhile: the timeout is the answer
                    pass
        return arrived

    def on_native_event(self, ev: Event) -> None:
        """Callback mode: runs on the library's dispatcher thread."""
        if self.delivery_ident is None:
            self.delivery_ident = threading.get_ident()
            _dispatcher.flag = True
        deferred = self.deliver([ev])
        if ev.kind == EventKind.CLOSED:
            self.finish()
            self.delivery_ended()
        pass_on(deferred, app_thread=False)

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

    def deliver(self, events: Sequence[Event]) -> Optional[BaseException]:
        """Routes and queues a batch; returns what a callback raised to stop the app, for
        the caller to pass on once the batch is delivered (see ``call_app``)."""
        deferred: Optional[BaseException] = None
        ready: List[Event] = []
        state_changed = False
        streamed = False
        answered = False
        queue_it = self.on_event is None
        message = EventKind.MESSAGE
        store_kind = EventKind.STORE
        for ev in events:
            kind = ev.kind
            if kind is message and queue_it:  # most events: straight to the queue
                ready.append(ev)
                continue
            if kind == EventKind.RESPONSE:
                self.resolve(ev)
                answered = True
                continue
            if kind in _TRANSFER_KINDS:
                # Media requests are Transfers, registered under the lock before any of their
                # reports can be routed (start_transfer), and the library sends none after
                # the RESPONSE: one without its Transfer was stopped, or is not ours.
                with self.lock:
                    t = self.pending.get(ev.request_id)
                    if isinstance(t, Transfer):
                        t._push(ev)
                streamed = True
                continue
            if kind is store_kind:
                # The store's subscribers first, then the app's events like a MESSAGE.
                hub = self.store_hub
                if hub is not None:
                    deferred = keep_first(deferred, hub.publish(ev))
                    streamed = True  # wakes a thread iterating Store.changes()
            elif kind in _STATE_KINDS:
                self.note(ev)
                state_changed = True
            if self.on_event is not None:
                deferred = keep_first(deferred, call_app(self.on_event, ev, "on_event"))
            else:
                ready.append(ev)
        if not ready and not state_changed and not streamed and not answered:
            return deferred
        # One lock and one notify per batch: the consumer's wake-up is the dear part (this
        # also wakes a thread iterating a Transfer, or waiting for a reply in poll mode).
        with self.cond:
            self.queue.extend(ready)
            if ready and ready[-1].kind == EventKind.CLOSED:
                self.ended = True
                self.reader_cond.notify_all()
            self.cond.notify_all()  # next_event(), wait_connected()
        return deferred

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
        """Delivery ended: fail requests that can no longer be answered, wake everyone.
        Failed first, so a waiter woken by the end finds its reply, not a timeout."""
        self.fail_pending()
        with self.cond:
            self.ended = True
            self.wake_all()
            # A thread in poll(2) on the library's descriptor (the reader's wait) may wait
            # for an event that never comes (after an internal panic, nothing does).
            if self.waiter is not None:
                self.waiter.wake()
        self.closed_event.set()

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
        if waiters:
            # Poll mode: their threads wait on the condition, or (one of them) on the
            # library's descriptor, where nothing may arrive any more.
            with self.cond:
                self.wake_all()
                if self.waiter is not None:
                    self.waiter.wake()

    # -- requests --------------------------------------------------------------------------

    def submit(self, command: str, data: JSONData, timeout: Optional[float]) -> PendingRequest:
        return self.adopt(self.start_request(command, data, timeout), timeout)

    def adopt(self, rid: int, timeout: Optional[float] = None) -> PendingRequest:
        """The :class:`PendingRequest` of request ``rid``, sent already (by :meth:`submit` or
        a store action) with ``timeout`` (``None``: the client's): its reply may even have
        been delivered meanwhile (an orphan)."""
        limit = self.request_timeout if timeout is None else timeout
        p = PendingRequest(self, rid, time.monotonic() + limit + REQUEST_GRACE_S)
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

    def start_transfer(
        self, what: str, params: bytes, data: Optional[BytesLike], timeout: Optional[float]
    ) -> Transfer:
        bound = (timeout if timeout is not None else self.request_timeout) + REQUEST_GRACE_S
        deadline = time.monotonic() + bound
        early: Optional[Event] = None
        # The lock spans the call and the registration, so the delivery thread (which takes
        # it to route a report) finds the Transfer for the first progress report or chunk.
        # The call only hands the request to the library's runtime: it does not wait.
        body = None if data is None else bytes(data)  # a copy (if any) outside the lock
        with self.lock:
            rid = self.start_media(what, params, body, timeout)
            t = Transfer(self, rid, what, deadline)
            early = self.orphans.pop(rid, None)
            if early is None:
                if self.ended or self.replies_ended:
                    early = Event(EventKind.RESPONSE, rid, Status.ERR_CLIENT_CLOSED, "", b"")
                else:
                    self.pending[rid] = t
        if early is not None:
            t._resolve(early)
        return t

    def check_can_wait(self, what: str) -> None:
        if self.on_event is not None and self.on_delivery_thread():
            raise StateError(
                f"waiting for {what} inside on_event would wait forever (its reports and reply "
                "are delivered on this thread)",
                Status.ERR_STATE,
            )

    def next_item(self, t: Transfer) -> Optional[Event]:
        """The next report of ``t``, waiting for it; ``None`` once its reply arrived and
        every report was taken. Past ``t``'s deadline: cancels it and raises."""
        if self.wait_until(lambda: bool(t._items) or t._done.is_set(), t._deadline):
            with self.cond:
                if t._items:
                    return t._items.popleft()
            return None
        t.cancel()
        raise RequestTimeoutError(f"{t.what}: no reply in time", request_id=t.id)

    # -- events ----------------------------------------------------------------------------

    def next_event(self, timeout: Optional[float]) -> Optional[Event]:
        if self.on_event is not None:
            raise WrongModeError(
                "this client delivers events to on_event; events() is not available",
                Status.ERR_WRONG_MODE,
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ev = self.take_ready()
            if ev is not None:
                return ev
            if not self.wait_until(self.has_queued, deadline, consumer=True):
                return self.take_ready()

    def has_queued(self) -> bool:
        return bool(self.queue)

    def take_ready(self) -> Optional[Event]:
        """An event already queued, taken without waiting or locking; ``None`` if none.
        deque.popleft is atomic under the GIL and the reader appends under the lock, so an
        event seen here is complete. The event is read before it is taken: CPython runs a
        signal handler right after a call returns, and one that raised (Ctrl-C) as
        ``popleft()`` returned would lose the event it took, which the library already
        counts as handed over (the resume point would claim it). Read first, it goes back.
        (From Python 3.10 no other thread runs between the read and the take; 3.8 and 3.9
        may switch there, so with two consumer threads the take can be a newer event, which
        is the one returned.)"""
        queue = self.queue
        ev: Optional[Event] = None
        try:
            ev = queue[0]
            ev = queue.popleft()
            if self.room_wanted:
                self.room_taken()
        except IndexError:  # nothing queued, or another thread took it meanwhile
            return None
        except BaseException:
            _put_back(queue, ev)
            raise
        return ev

    def room_taken(self) -> None:
        """An event was taken while a thread waits for room in the queue: wake it."""
        with self.cond:
            self.room_wanted = False
            self.wake_all()

    # -- closing ---------------------------------------------------------------------------

    def on_delivery_thread(self) -> bool:
        return self.delivery_ident is not None and threading.get_ident() == self.delivery_ident

    def close(self, timeout: Optional[float], keep_resume: bool) -> None:
        self.check_pid()
        if not self.handle.live:
            return
        if not self.close_native(keep_resume):
            self.abandon()
            return
        with self.cond:
            self.wake_all()  # a reader waiting for room goes on
        # tether_client_free waits for a running callback, and the reader may sit in a poll:
        # the delivery thread frees when CLOSED has passed; this call only waits for that.
        if self.free_when_delivery_ends():
            self.free()
            return
        if self.on_delivery_thread() or self.token_holder == threading.get_ident():
            # Inside on_event (or a collection on the reader), or inside on_change on the app
            # thread that is taking events: this thread delivers CLOSED once it returns.
            return
        if (self.on_event is not None and _on_dispatcher()) or in_resolver():
            # Inside another client's callback: this client's dispatcher may be waiting for
            # ours (each closing the other), so do not wait for it at all. Inside a proxy
            # resolver: freeing waits for the resolver to return.
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
        """The Client object was collected without close(): close without waiting. A
        collection runs at any allocation, on any thread, also one that holds this client's
        lock (not reentrant): the close runs on a thread of its own."""
        if self.pid != os.getpid() or not self.handle.live:
            return
        try:
            start_thread(self.close_collected)
        except RuntimeError:  # the interpreter is exiting: its handler closes every client
            pass

    def abandon(self) -> None:
        """The native handle is unusable (see ``close_native``): ends delivery, fails what
        waits and frees now."""
        self.finish()
        self.free()

    def close_collected(self) -> None:
        if self.pid != os.getpid() or not self.handle.live:
            return
        try:
            if not self.close_native():
                self.abandon()
                return
            with self.cond:
                self.wake_all()
            if self.free_when_delivery_ends():
                self.free()
        except TetherError:
            pass

    def begin_exit(self) -> bool:
        if self.freed.is_set() or self.on_delivery_thread():
            return False
        if not self.handle.live:
            return True  # being freed on another thread: end_exit waits for it
        if not self.close_native(keep_resume=True):
            self.abandon()
            return False
        with self.cond:
            self.wake_all()
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
            self.wake_all()
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
        Keep it short; it is kept referenced until the library is done with it. An
        exception it raises is logged, ``SystemExit`` and ``KeyboardInterrupt`` too (no app
        code runs on that thread to stop); the next event is delivered as usual.
    :param event_queue_size: poll mode: events buffered in Python before only a consumer
        (:meth:`events`) takes more (the library then applies TCP backpressure). Replies wait
        behind them, so consume :meth:`events` or use ``on_event``.
    :param batch_size: events taken per native call.
    :param json_loads: the parser behind ``Event.data`` and :meth:`request`'s result, called
        with the payload's bytes (default ``json.loads``). E.g. ``orjson.loads``, about 4x
        faster on gomuks events (``pip install "tether[fast]"``); mind its semantics: it
        turns integers beyond 64 bits into floats and refuses ``NaN`` and lone surrogates.
    :param store: ``True`` attaches a native gomuks store (:class:`tether.store.Store`,
        then ``client.store``) before connecting, so it sees every event; a mapping gives
        its options (``{"evict_after_ms": N}``). Its STORE events arrive like MESSAGE
        events (see :mod:`tether.store`).
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
        store: StoreOptions = False,
        **options: Unpack[Options],
    ) -> None:
        check_options("Client", options)
        self._core = core = _SyncCore(
            url, options, event_queue_size, batch_size, on_event, json_loads
        )
        self._store: Optional[Store] = None
        try:
            if store is not False and store is not None:
                # Before connect (and before the reader starts): the store sees every event.
                self._store = Store._attach(core, store)
            core.start()
        except BaseException:
            if self._store is not None:
                self._store.close()
            core.abort()
            raise
        self._finalizer = weakref.finalize(self, core.close_from_gc)
        self._finalizer.atexit = False  # at exit, tether's own handler closes and waits

    @property
    def store(self) -> Store:
        """The native store attached with ``store=True`` (:class:`tether.store.Store`).

        :raises StateError: the client was created without ``store=True``."""
        return self._attached_store()

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
        :raises StateError: not possible on this client (rwws has no requests; a command that
            needs the account while the backend says it is not logged in; or called
            inside ``on_event``, where replies cannot arrive: use :meth:`submit` there).
        :raises InvalidArgumentError: ``data`` is the bytes ``null``, or over the websocket
            the request is over the backend's 1 MiB limit for one message (which would
            close the connection).
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
        """Cancels request ``request_id`` (its reply arrives as ``RequestCancelledError``).

        :raises StateError: the client has stopped (state ``CLOSED``): the request has ended
            or is ending.
        :raises InvalidArgumentError: no request of this client has that id.
        """
        self._core.cancel(request_id)

    # -- media (in-process) ------------------------------------------------------------------

    def upload_media(
        self,
        params: JSONData = None,
        data: Optional[BytesLike] = None,
        *,
        path: Optional[PathArg] = None,
        timeout: Optional[float] = None,
    ) -> Transfer:
        """In-process: starts gomuks's ``upload_media`` of ``data`` (bytes, copied before this
        returns) or of the file at ``path``; returns its :class:`Transfer` without waiting
        (its ``id`` is the request id). Iterate it for the progress (floats as the backend reports them; gomuks v0.2607.0: 0 to 1),
        then ``result()`` is the ``m.room.message`` content to send. :meth:`upload` does both.

        ``params`` is the command's JSON object (``filename``, ``encrypt``,
        ``voice_message``, resize options, ...) as :meth:`request` takes data; ``path`` is
        set as its ``"path"``. ``timeout`` (seconds) overrides the request timeout and
        covers the whole upload.

        :raises UnsupportedError: a websocket client (use the backend's HTTP upload).
        :raises InvalidArgumentError: both or neither of ``data`` and a path.
        :raises ClientClosedError: the client is closed.
        """
        payload = upload_params(params, data, path)
        return self._core.start_transfer("upload_media", payload, data, timeout)

    def upload(
        self,
        params: JSONData = None,
        data: Optional[BytesLike] = None,
        *,
        path: Optional[PathArg] = None,
        timeout: Optional[float] = None,
        on_progress: Optional[Callable[[float], Any]] = None,
    ) -> JSONData:
        """In-process: :meth:`upload_media`, then blocks until its reply, calling
        ``on_progress(progress)`` on this thread for each progress report; returns the
        ``m.room.message`` content to send. An exception from ``on_progress`` (or an
        interrupt) cancels the upload and propagates.

        :raises RemoteError: the backend refused or failed the upload (``.message``).
        :raises RequestTimeoutError: no reply in time.
        :raises UnsupportedError: a websocket client.
        :raises StateError: inside ``on_event`` (use :meth:`upload_media` there).
        """
        self._core.check_can_wait("upload_media")
        t = self.upload_media(params, data, path=path, timeout=timeout)
        return _run_transfer(t, on_progress)

    def download_media(self, params: JSONData, *, timeout: Optional[float] = None) -> Transfer:
        """In-process: starts gomuks's ``download_media`` (``params``: its JSON object,
        ``{"mxc": "mxc://…", "encrypted": …}``, or the ``mxc://`` URI alone as a ``str``);
        returns its :class:`Transfer` without waiting. Iterate it for the file's bytes, in
        chunks (uncached, unencrypted media); ``result()`` is the cached file's row and path.
        :meth:`download` does both.

        :raises UnsupportedError: a websocket client; as the result, a backend library
            without streaming download (gomuks v0.2607.0).
        :raises ClientClosedError: the client is closed.
        """
        return self._core.start_transfer("download_media", download_params(params), None, timeout)

    def download(
        self, params: JSONData, into: ChunkSink, *, timeout: Optional[float] = None
    ) -> JSONData:
        """In-process: :meth:`download_media`, writing each chunk, in order, to ``into`` (a
        binary file-like object, or a callable taking ``bytes``) on this thread as it
        arrives; returns the reply (the cached file's row and path). An exception from
        ``into`` (or an interrupt) cancels the download and propagates.

        :raises RemoteError: the backend failed the download (``.message``).
        :raises UnsupportedError: a websocket client, or a backend library without
            streaming download.
        :raises StateError: inside ``on_event`` (use :meth:`download_media` there).
        """
        write = getattr(into, "write", None)
        if write is None:
            if not callable(into):
                raise TypeError("into must be a binary file-like object or a callable")
            write = into
        self._core.check_can_wait("download_media")
        t = self.download_media(params, timeout=timeout)
        return _run_transfer(t, write)

    def send_packet(self, packet: bytes) -> None:
        """rwws: sends one raw packet (queued while disconnected). If the client ends before
        writing it, it comes back as an :attr:`~tether.EventKind.UNSENT` event.

        :raises StateError: the client is closed or has stopped (nothing taken).
        :raises SendBufferFullError: it would pass ``max_unsent_bytes``.
        """
        self._core.send_packet(packet)

    def send_settings(self, settings: Sequence[Tuple[int, bytes]]) -> None:
        """rwws: sends one Settings packet with ``(id, value)`` pairs (comes back as UNSENT
        like :meth:`send_packet`)."""
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
        if core.process is _base._process:
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
        core = self._core
        queue = core.queue
        closed = EventKind.CLOSED
        if threading.current_thread() is threading.main_thread():
            rescan_signals()  # a handler set just before the loop is held back at once
        while True:
            # The per-event path of next_event(), core.take_ready() inlined (a call per event
            # costs a few percent of the stream): most events are taken here.
            ev = None
            if queue and core.process is _base._process:
                try:
                    ev = queue[0]
                    ev = queue.popleft()
                    if core.room_wanted:
                        core.room_taken()
                except IndexError:  # another thread took it meanwhile
                    ev = None
                except BaseException:
                    _put_back(queue, ev)
                    raise
            if ev is None:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ev = self.next_event(left)
                if ev is None:
                    return
            yield ev
            if ev.kind is closed:
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
        deadline = None if timeout is None else time.monotonic() + timeout
        core.wait_until(
            lambda: core.connected
            or core.fatal is not None
            or core.closed
            or core.ended
            or core.closing,
            deadline,
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
        :class:`ClientClosedError` when it returns (called from this client's own
        ``on_event``: once that callback has returned and the library has delivered their
        replies, which come before CLOSED); queued events can still be read, and
        ``on_event`` still receives every event up to CLOSED. Idempotent.

        gomuks: close code 1001 (if connected), so the backend frees the events it kept for
        this client.
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
