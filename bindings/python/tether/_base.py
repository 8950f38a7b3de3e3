"""What the sync and asyncio clients share: configuration, the guarded native handle,
request encoding, resume state, state and statistics, fork detection and closing clients
(and removing the log callback) at interpreter exit."""

from __future__ import annotations

import atexit
import copy
import dataclasses
import json
import logging
import os
import threading
import time
import weakref
from ctypes import byref, c_int64, c_size_t, c_void_p, create_string_buffer
from typing import Any, Callable, Generator, Mapping, Optional, Sequence, Tuple, Union

from . import _ffi, _log
from ._options import PathArg, ResumeState, _cstr, _ms, build_config, option, parse_protocol
from .errors import (
    ClientClosedError,
    InvalidArgumentError,
    InvalidUtf8Error,
    PanicError,
    RequestTimeoutError,
    StateError,
    Status,
    TetherError,
    exception_for,
)
from .events import Event, EventKind, JSONLoads, ResumeOutcome, event_class
from .stats import ConnectionState, Stats, closed_copy, empty_stats, read_state, read_stats

log = logging.getLogger("tether")

#: Extra time, past a request's own timeout, that the binding waits for the library's
#: answer before giving up on its own (the library always answers, so this is a backstop).
REQUEST_GRACE_S = 5.0
#: The library's default request timeout (``tether_config_new``).
DEFAULT_REQUEST_TIMEOUT_S = 60.0
#: How long interpreter exit waits for CLOSED, all open clients together.
AT_EXIT_TIMEOUT_S = 2.0

JSONData = Any
#: Bytes to upload.
BytesLike = Union[bytes, bytearray, memoryview]


def encode_payload(data: JSONData) -> bytes:
    """Request data as JSON bytes: ``None`` is ``{}``; ``bytes`` are sent as they are (they
    must already be JSON); anything else goes through ``json.dumps``."""
    if data is None:
        return b""
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def upload_params(params: JSONData, data: Optional[BytesLike], path: Optional[PathArg]) -> bytes:
    """The JSON params of ``upload_media``: ``params`` as :func:`encode_payload` takes them,
    with ``path`` (when given) set as their ``"path"``. Exactly one of ``data`` and a path
    (``path`` or ``"path"`` in a mapping) says what to upload."""
    in_params = isinstance(params, Mapping) and "path" in params
    given = [w for w, g in (("data", data is not None), ("path", path is not None),
                            ('a "path" in params', in_params)) if g]
    if len(given) > 1:
        raise InvalidArgumentError(f"upload_media takes data or a path, not both ({' and '.join(given)})")
    if path is None:
        if not given and isinstance(params, Mapping):
            raise InvalidArgumentError("upload_media needs data or a path")
        return encode_payload(params)
    if isinstance(params, (bytes, bytearray, memoryview)):
        try:
            params = json.loads(bytes(params))
        except ValueError as e:
            raise InvalidUtf8Error(f"upload_media params are not JSON: {e}") from None
    if params is not None and not isinstance(params, Mapping):
        raise TypeError("upload_media params must be a JSON object (a mapping)")
    merged = dict(params or {})
    merged["path"] = os.fspath(path)
    return encode_payload(merged)


def download_params(params: JSONData) -> bytes:
    """The JSON params of ``download_media``; a ``str`` is the ``mxc://`` URI alone."""
    if isinstance(params, str):
        params = {"mxc": params}
    return encode_payload(params)


def call_app(fn: Callable[[Any], Any], arg: Any, what: str) -> Optional[BaseException]:
    """Runs an app callback in the middle of delivering a batch. An ``Exception`` is logged
    and dropped. Any other ``BaseException`` (``SystemExit`` from ``sys.exit()``,
    ``KeyboardInterrupt``) is returned instead of raised: raised here it would lose the rest
    of a batch the library has already handed over, so the delivering code raises it once
    the whole batch is delivered (:func:`pass_on`)."""
    try:
        fn(arg)
    except Exception:
        log.exception("tether: %s raised", what)
    except BaseException as e:
        return e
    return None


def keep_first(
    first: Optional[BaseException], e: Optional[BaseException]
) -> Optional[BaseException]:
    """The first of two exceptions a batch's callbacks raised to stop the app; a later one
    is logged, not lost without a trace."""
    if first is not None and e is not None:
        log.error("tether: a callback also raised %s; only the first is raised", type(e).__name__,
                  exc_info=e)
    return first if first is not None else e


def pass_on(e: Optional[BaseException], app_thread: bool) -> None:
    """After a batch is delivered: raises what an app callback raised to stop the app
    (see :func:`call_app`) on the app's own thread; on the binding's or the library's thread
    (nobody there to stop) it is logged, and delivery goes on."""
    if e is None:
        return
    if app_thread:
        raise e
    log.error(
        "tether: a callback raised %s on tether's delivery thread, which cannot stop the app; "
        "delivery goes on",
        type(e).__name__,
        exc_info=e,
    )


class Handle:
    """A ``tether_client *`` shared by threads. Calls go through :meth:`call`, which counts
    callers in flight; :meth:`free` forbids new calls, waits for those in flight, then frees,
    so ``tether_client_free`` never races another call on the client (the header's rule).
    Other handles (a ``tether_store *``) pass their own ``free_fn`` and the error that
    :meth:`call` raises once they are freed."""

    __slots__ = ("_ptr", "_cond", "_busy", "_state", "_word", "_free_fn", "_closed")

    LIVE, FREEING, FREED = 0, 1, 2

    def __init__(
        self,
        ptr: int,
        free_fn: Optional[Callable[[int], None]] = None,
        closed: Optional[Callable[[], TetherError]] = None,
    ) -> None:
        self._free_fn = free_fn
        self._closed = closed
        self._ptr: Optional[int] = ptr
        # The pointer also as a machine word: a Python int keeps it in 30-bit digits, where
        # a leak checker (LeakSanitizer, valgrind) cannot see that the client is still owned,
        # e.g. one left open at exit because its server never answered the close.
        self._word = c_void_p(ptr)
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._state = Handle.LIVE

    @property
    def live(self) -> bool:
        return self._state == Handle.LIVE

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(ptr, *args)``, or :class:`ClientClosedError` once the handle is freed."""
        with self._cond:
            ptr = self._ptr
            if ptr is None:
                if self._closed is not None:
                    raise self._closed()
                raise ClientClosedError("the client is closed", Status.ERR_CLIENT_CLOSED)
            self._busy += 1
        try:
            return fn(ptr, *args)
        finally:
            with self._cond:
                self._busy -= 1
                if self._busy == 0:
                    self._cond.notify_all()

    def free(self, before: Optional[Callable[[int], None]] = None) -> bool:
        """Frees the client once; returns whether this call did it. ``before(ptr)`` runs
        after the last caller left and before ``tether_client_free``."""
        with self._cond:
            if self._state != Handle.LIVE:
                return False
            self._state = Handle.FREEING
            ptr = self._ptr
            self._ptr = None
            self._cond.wait_for(lambda: self._busy == 0)
        assert ptr is not None
        try:
            if before is not None:
                before(ptr)
        finally:
            (self._free_fn or _ffi.lib.tether_client_free)(ptr)
            with self._cond:
                self._state = Handle.FREED
                self._word.value = None
        return True


# -- processes: fork detection and interpreter exit ---------------------------------------

#: This process, as clients know it: replaced in a forked child, so a client made before the
#: fork sees it is in another process without a getpid() call per event, and one made in
#: the child does not.
_process = object()
_live: "weakref.WeakSet[CoreBase]" = weakref.WeakSet()
_strong: "set[CoreBase]" = set()  # cores that must outlive their client object (closing)


def _after_fork_in_child() -> None:
    global _process
    _process = object()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def forked_since(process: object, pid: int) -> bool:
    """Whether this is a child forked after the process (``process`` and ``pid``, as
    :class:`CoreBase` records them) made a client or store. A client made in a child is the
    child's own."""
    return process is not _process or os.getpid() != pid


@atexit.register
def _at_exit() -> None:
    """Closes the clients, then removes the log callback (whose records the closes still
    reach), all before the interpreter finalizes. One handler, so nothing registered in
    between can reorder the two."""
    try:
        _close_all_at_exit()
    finally:
        _log.uninstall(for_good=True)


def _close_all_at_exit() -> None:
    """Closes and frees every client still open when the interpreter exits, so no library
    callback or poller touches a finalizing interpreter. All are closed first and then
    awaited against one deadline: a silent server costs one timeout, not one per client."""
    # Only this process's own: those made before a fork belong to the parent.
    cores = [c for c in dict.fromkeys([*_live, *_strong]) if not forked_since(c.process, c.pid)]
    deadline = time.monotonic() + AT_EXIT_TIMEOUT_S
    closing = []
    for core in cores:
        try:
            if core.begin_exit():
                closing.append(core)
        except Exception:  # pragma: no cover - best effort at exit
            log.debug("tether: closing a client at exit failed", exc_info=True)
    late = 0
    for core in closing:
        try:
            if not core.end_exit(deadline):
                late += 1
        except Exception:  # pragma: no cover - best effort at exit
            log.debug("tether: closing a client at exit failed", exc_info=True)
    if late:
        log.warning(
            "tether: %d client(s) had no CLOSED within %s s at exit", late, AT_EXIT_TIMEOUT_S
        )


class CoreBase:
    """The native client and the state both APIs share. The public classes wrap a core so
    that a client object nobody references can be collected (its core then closes)."""

    #: Thread that delivers events (reader thread, dispatcher thread); user code never
    #: waits for a reply on it.
    delivery_ident: Optional[int] = None
    #: The subscribers of the attached store (``tether.store._Hub``), if the client has one:
    #: the delivering thread hands it every STORE event before queueing the event.
    store_hub: Optional[Any] = None

    def __init__(
        self,
        url: Optional[str],
        options: Mapping[str, object],
        event_queue_size: int,
        json_loads: Optional[JSONLoads],
    ) -> None:
        if event_queue_size < 1:
            raise InvalidArgumentError("event_queue_size must be positive")
        #: The class of this client's events (its ``data`` parses with ``json_loads``).
        self.event_cls = event_class(json_loads)
        self.pid = os.getpid()
        self.process = _process
        self.protocol = parse_protocol(option(options, "protocol"))
        rt = option(options, "request_timeout")
        self.request_timeout = float(rt) if rt is not None else DEFAULT_REQUEST_TIMEOUT_S
        self.queue_limit = event_queue_size
        cfg = build_config(url, **options)
        try:
            # Before the client exists, so its first records are not missed.
            _log.install()
            ptr = _ffi.new_handle(_ffi.lib.tether_client_new, cfg)
        finally:
            _ffi.lib.tether_config_free(cfg)
        self.handle = Handle(ptr)
        #: The library's id of this client (``tether_client_id``), as log records name it.
        self.client_id: int = _ffi.lib.tether_client_id(ptr)
        #: Set once the native client is freed (by whichever thread got to free it).
        self.freed = threading.Event()
        self.lock = threading.Lock()
        self.closing = False  # tether_client_close was called by us
        self.closed = False  # the CLOSED event was seen
        self.connected = False
        #: Why the connection ended for good (DISCONNECTED with no retry), if it did.
        self.fatal: Optional[TetherError] = None
        self.last_disconnect: Optional[Event] = None
        self.saved_resume: Optional[ResumeState] = None
        self.saved_token: Optional[str] = None
        self.saved_stats: Optional[Stats] = None
        _live.add(self)

    # -- checks ----------------------------------------------------------------------------

    def check_pid(self) -> None:
        if forked_since(self.process, self.pid):
            raise _ffi.forked_error()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        self.check_pid()
        return self.handle.call(fn, *args)

    def connect_error(self) -> TetherError:
        """What ``wait_connected`` raises once the client cannot connect any more: the
        reason it ended for good (e.g. :class:`UnauthorizedError`), else
        :class:`ClientClosedError`. A copy each time: one exception object raised from
        several calls would collect every caller's traceback."""
        fatal = self.fatal
        if fatal is None:
            return self.closed_error()
        try:
            return copy.copy(fatal)
        except Exception:  # an exception class whose copy fails still has a message
            return fatal

    def closed_error(self) -> ClientClosedError:
        if self.fatal is not None:
            return ClientClosedError(
                f"the client is closed: {self.fatal}", Status.ERR_CLIENT_CLOSED
            )
        return ClientClosedError("the client is closed", Status.ERR_CLIENT_CLOSED)

    # -- operations ------------------------------------------------------------------------

    def connect(self) -> None:
        _ffi.check(self.call(_ffi.lib.tether_client_connect), "connect")

    def start_request(self, command: str, data: JSONData, timeout: Optional[float]) -> int:
        """Sends a request; returns its id. Raises for refused calls."""
        self.check_pid()
        if self.closing or self.closed:
            raise self.closed_error()
        cmd = _cstr("command", command)
        payload = encode_payload(data)
        rid = c_int64()
        lib = _ffi.lib
        if timeout is None:
            st, err = self.handle.call(_request, lib.tether_client_request, cmd, payload, rid)
        else:
            ms = _ms("timeout", timeout)
            st, err = self.handle.call(
                _request_t, lib.tether_client_request_with_timeout, cmd, payload, ms, rid
            )
        if st < 0:
            if st == Status.ERR_STATE and (self.closing or self.closed):
                raise self.closed_error()
            raise exception_for(st, f"request {command!r}: {err}")
        return rid.value

    def start_media(
        self, what: str, params: bytes, data: Optional[BytesLike], timeout: Optional[float]
    ) -> int:
        """Sends an ``upload_media`` (``data`` ``None``: from the params' path) or a
        ``download_media`` request (``what``); returns its id. Raises for refused calls
        (:class:`UnsupportedError` over the websocket)."""
        self.check_pid()
        if self.closing or self.closed:
            raise self.closed_error()
        ms = 0 if timeout is None else _ms("timeout", timeout)  # 0: the configured timeout
        rid = c_int64()
        if what == "upload_media":
            body = None if data is None else bytes(data)
            st, err = self.handle.call(_upload, params, body, ms, rid)
        else:
            st, err = self.handle.call(_download, params, ms, rid)
        if st < 0:
            if st == Status.ERR_STATE and (self.closing or self.closed):
                raise self.closed_error()
            raise exception_for(st, f"{what}: {err}")
        return rid.value

    def cancel(self, request_id: int) -> None:
        # As pause and packets: StateError once the client stopped, whether freed or not.
        _ffi.check(self.call_control(_ffi.lib.tether_client_cancel, int(request_id)), "cancel")

    def call_control(self, fn: Callable[..., Any], *args: Any) -> Any:
        """:meth:`call` for what is not a request (pause, packets, settings): once the
        client is freed, :class:`StateError`, as the library answers between close and free,
        so one ``except StateError`` covers a closed client whenever it was closed."""
        try:
            return self.call(fn, *args)
        except ClientClosedError as e:
            raise StateError(str(e), Status.ERR_STATE) from None

    def command(self, fn: Any, what: str) -> None:
        """Calls a status-returning C function that takes only the client."""
        _ffi.check(self.call_control(fn), what)

    def send_packet(self, packet: bytes) -> None:
        data = bytes(packet)
        _ffi.check(
            self.call_control(_ffi.lib.tether_client_send_packet, data, len(data)),
            "send_packet",
        )

    def send_settings(self, settings: Sequence[Tuple[int, bytes]]) -> None:
        lib = _ffi.lib
        self.check_pid()
        s = _ffi.new_handle(lib.tether_settings_new)
        try:
            for sid, value in settings:
                v = bytes(value)
                sid = int(sid)
                if not 0 <= sid <= 0xFF:  # c_uint8 would wrap 257 into setting 1
                    raise InvalidArgumentError(f"setting id {sid} is not a byte (0-255)")
                _ffi.check(lib.tether_settings_add(s, sid, v, len(v)), "settings")
            _ffi.check(self.call_control(lib.tether_client_send_settings, s), "send_settings")
        finally:
            lib.tether_settings_free(s)

    def resume_state(self) -> ResumeState:
        self.check_pid()
        state = self.saved_resume or ResumeState("", 0)
        if self.handle.live:
            try:
                state = self.handle.call(_resume_state)
            except ClientClosedError:
                state = self.saved_resume or state
        return before_held(state, self.held_events())

    def auth_token(self) -> Optional[str]:
        self.check_pid()
        if not self.handle.live:
            return self.saved_token
        try:
            token: Optional[str] = self.handle.call(_auth_token)
            return token
        except ClientClosedError:
            return self.saved_token

    def queued_here(self) -> int:  # pragma: no cover - overridden
        """Events this binding took from the library and holds for the app."""
        return 0

    def held_events(self) -> Sequence[Event]:  # pragma: no cover - overridden
        """A snapshot of the events this binding holds for the app, oldest first."""
        return ()

    def state(self) -> ConnectionState:
        self.check_pid()
        try:
            state: ConnectionState = self.handle.call(read_state)
            return state
        except ClientClosedError:
            return ConnectionState.CLOSED

    def stats(self) -> Stats:
        self.check_pid()
        try:
            stats: Stats = self.handle.call(read_stats, self.queued_here())
            return stats
        except ClientClosedError:
            pass
        # Freed: the counters of its last moment (none if the snapshot failed); the library's
        # queue went with it, this binding's may still hold events.
        saved = self.saved_stats or empty_stats()
        return dataclasses.replace(saved, queued_events=self.queued_here())

    def close_native(self, keep_resume: bool = True) -> bool:
        """``tether_client_close`` (``keep_resume``: ``tether_client_close_keep_resume``); an
        already closed client is fine. Closes the app did not ask for (garbage collection,
        interpreter exit) keep the resume point usable, as ``tether_client_free`` does.
        Returns ``False`` when an internal panic left the native handle unusable: then only
        its free works (it closes the connection in the background) and no CLOSED will come
        through it, so the caller frees at once instead of waiting."""
        with self.lock:
            self.closing = True
        try:
            st, _ = self.handle.call(_close_keep_resume if keep_resume else _close)
        except ClientClosedError:
            return True
        if st == Status.ERR_PANIC:
            log.error("tether: the client is unusable after an internal panic; freeing it")
            return False
        if st < 0 and st != Status.ERR_STATE:
            _ffi.check(st, "close")
        return True

    def free(self) -> bool:
        """Frees the native client once, saving its resume state first. Returns whether
        this call did it."""

        def save(ptr: int) -> None:
            try:
                self.saved_stats = closed_copy(read_stats(ptr))
            except TetherError:
                pass
            try:
                self.saved_resume = _resume_state(ptr)
                self.saved_token = _auth_token(ptr)
            except TetherError:
                pass

        if not self.handle.free(save):
            return False
        _strong.discard(self)
        _live.discard(self)
        self.freed.set()
        return True

    # -- routing ---------------------------------------------------------------------------

    def note(self, ev: Event) -> None:
        """Tracks connection state from a non-RESPONSE event."""
        k = ev.kind
        if k == EventKind.CONNECTED:
            self.connected = True
        elif k == EventKind.DISCONNECTED:
            self.connected = False
            self.last_disconnect = ev
            if ev.retry_in_ms is None and ev.status < 0:
                self.fatal = ev.error
        elif k == EventKind.CLOSED:
            self.connected = False
            self.closed = True

    # -- interpreter exit: all clients share one deadline ----------------------------------

    def begin_exit(self) -> bool:  # pragma: no cover - overridden
        """Starts closing without waiting; returns whether :meth:`end_exit` must follow."""
        raise NotImplementedError

    def end_exit(self, deadline: float) -> bool:  # pragma: no cover - overridden
        """Waits for CLOSED until ``deadline`` (``time.monotonic()``), then frees what can be
        freed; returns whether CLOSED arrived in time."""
        raise NotImplementedError


def start_thread(target: Callable[[], None]) -> None:
    """Runs ``target`` on a daemon thread of its own (``RuntimeError`` at interpreter exit)."""
    threading.Thread(target=target, name="tether-collected", daemon=True).start()


def _request(ptr: int, fn: Any, cmd: bytes, payload: bytes, rid: c_int64) -> Tuple[int, str]:
    st = fn(ptr, cmd, payload or None, len(payload), byref(rid))
    return st, (_ffi.last_error() if st < 0 else "")


def _request_t(
    ptr: int, fn: Any, cmd: bytes, payload: bytes, ms: int, rid: c_int64
) -> Tuple[int, str]:
    st = fn(ptr, cmd, payload or None, len(payload), ms, byref(rid))
    return st, (_ffi.last_error() if st < 0 else "")


def _upload(
    ptr: int, params: bytes, body: Optional[bytes], ms: int, rid: c_int64
) -> Tuple[int, str]:
    # body b"" is a non-NULL pointer: an empty upload; None is NULL: upload the params' path.
    st = _ffi.lib.tether_client_upload_media(
        ptr, params or None, len(params), body, len(body or b""), ms, byref(rid)
    )
    return st, (_ffi.last_error() if st < 0 else "")


def _download(ptr: int, params: bytes, ms: int, rid: c_int64) -> Tuple[int, str]:
    st = _ffi.lib.tether_client_download_media(ptr, params or None, len(params), ms, byref(rid))
    return st, (_ffi.last_error() if st < 0 else "")


def _close(ptr: int) -> Tuple[int, str]:
    st = _ffi.lib.tether_client_close(ptr)
    return st, (_ffi.last_error() if st < 0 else "")


def _close_keep_resume(ptr: int) -> Tuple[int, str]:
    st = _ffi.lib.tether_client_close_keep_resume(ptr)
    return st, (_ffi.last_error() if st < 0 else "")


class ClientState:
    """The state both public clients report, read from their core."""

    _core: CoreBase
    #: The native store attached with ``store=True`` (``None`` without).
    _store: Any = None

    def _attached_store(self) -> Any:
        """The store, for both clients' ``store`` property.

        :raises StateError: the client was created without ``store=True``."""
        if self._store is None:
            raise StateError(
                f"this client has no store: create it with {type(self).__name__}(..., store=True)",
                Status.ERR_STATE,
            )
        return self._store

    @property
    def connected(self) -> bool:
        """Whether the last connection event seen was CONNECTED."""
        return self._core.connected

    @property
    def closed(self) -> bool:
        """Whether the client is closed (CLOSED seen, or :meth:`close` called)."""
        core = self._core
        return core.closed or core.closing or not core.handle.live

    @property
    def id(self) -> int:
        """The library's id of this client, unique in the process: log records name their
        client by it (the ``tether_client`` attribute of a :class:`logging.LogRecord`)."""
        return self._core.client_id

    @property
    def state(self) -> ConnectionState:
        """The connection state as the library sees it now; reading it takes no event.
        ``CLOSED`` once the client is closed and freed."""
        return self._core.state()

    def stats(self) -> Stats:
        """A snapshot of the client's statistics (:class:`Stats`); takes no event. After
        :meth:`close` it keeps the counters of the client's last moment, in state CLOSED."""
        return self._core.stats()

    @property
    def fatal(self) -> Optional[TetherError]:
        """Why the connection ended for good (a DISCONNECTED with no retry), if it did."""
        return self._core.fatal

    def resume_state(self) -> ResumeState:
        """The resume point (``run_id``, last event id): just after the newest event the app
        has taken from this client, so a later client given it is replayed what was read but
        never iterated. Also valid after :meth:`close`."""
        return self._core.resume_state()

    def pause(self) -> None:
        """Pauses in place (the app goes to the background): the connection closes keeping
        the backend's resume entry, a DISCONNECTED event with status OK and no retry follows,
        and nothing reconnects until :meth:`unpause`. Requests made meanwhile wait (their
        timeouts still run); after unpausing, the events missed meanwhile arrive exactly once.
        Paused while waiting to reconnect there is no connection to close and no event: the
        state reads ``PAUSED``.

        :raises StateError: the client is closed or has stopped.
        :raises UnsupportedError: an in-process client (there is no connection).
        """
        self._core.command(_ffi.lib.tether_client_pause, "pause")

    def unpause(self) -> None:
        """Ends a pause: connects at once and resumes where the paused connection stopped.
        :class:`StateError` once closed or stopped; in-process clients:
        :class:`UnsupportedError`."""
        self._core.command(_ffi.lib.tether_client_unpause, "unpause")

    def reconnect_now(self) -> None:
        """The cue for a network change or the app coming back to the foreground: while
        waiting to reconnect, connects now; while connected, probes the link and reconnects at
        once if nothing arrives within ``pong_timeout``. Never opens a second connection.
        :class:`StateError` once closed or stopped; in-process clients:
        :class:`UnsupportedError`."""
        self._core.command(_ffi.lib.tether_client_reconnect_now, "reconnect_now")

    def auth_token(self) -> Optional[str]:
        """The credential the next connection sends, to persist instead of the password:
        gomuks, the ``gomuks_auth`` token (the configured one until a login with
        ``username``/``password`` or a renewal replaces it); rwws, the configured key.
        ``None`` before the first login, and with auth disabled unless a token was
        configured. Also valid after :meth:`close`. A secret: keep it out of logs."""
        return self._core.auth_token()


def _sized_string(what: str, call: Callable[[Any, int, Any], int]) -> str:
    """A string from a ``(buf, cap, out_len)`` function of the C API: asks for the length,
    then copies; asks again if it grew in between (a new run_id, a renewed token)."""
    n = c_size_t()
    while True:
        st = call(None, 0, byref(n))
        if st not in (Status.OK, Status.ERR_BUFFER_TOO_SMALL):
            _ffi.check(st, what)
        buf = create_string_buffer(n.value + 1)
        st = call(buf, len(buf), byref(n))
        if st == Status.ERR_BUFFER_TOO_SMALL:
            continue
        _ffi.check(st, what)
        return buf.value.decode("utf-8", "replace")


def before_held(state: ResumeState, held: Sequence[Event]) -> ResumeState:
    """The resume point of an app that has not taken ``held`` (oldest first) yet. The library
    counts what this binding took from it, but a later client must be replayed what the app
    never saw: the point goes back to just before the first buffered event held. Buffered ids
    count down by one per event in a run (gomuks-rpc.md §3.3), so that is its id plus one.

    That holds only while the held events continue what the app saw. A connection that did
    not resume, or whose resume failed, starts the backend's state afresh; and a
    ``sync_complete`` with id 0 (a start's state, a catchup, the room list after a login) is
    never replayed by a resume. Held, the app has not seen them: it must start afresh too,
    and the point is 0."""
    if state.last_event_id == 0:
        # Nothing the library counts was taken: whatever is held is older.
        return state
    fresh = ResumeState(state.run_id, 0)
    first: Optional[int] = None
    for ev in held:
        kind = ev.kind
        if kind == EventKind.MESSAGE:
            rid = ev.request_id
            if rid < 0:
                if first is None:
                    first = rid
            elif rid == 0 and ev.command == "sync_complete":
                return fresh
        elif kind == EventKind.CONNECTED and not ev.resume_attempted:
            return fresh
        elif kind == EventKind.RESUMED and ev.resume_outcome != ResumeOutcome.SUCCEEDED:
            return fresh
    if first is None:
        return state
    return ResumeState(state.run_id, first + 1)


def _resume_state(ptr: int) -> ResumeState:
    lib = _ffi.lib
    last = c_int64()
    run_id = _sized_string(
        "resume_state",
        lambda buf, cap, n: lib.tether_client_resume_state(ptr, buf, cap, n, byref(last)),
    )
    return ResumeState(run_id, last.value)


def _auth_token(ptr: int) -> Optional[str]:
    lib = _ffi.lib
    token = _sized_string(
        "auth_token", lambda buf, cap, n: lib.tether_client_auth_token(ptr, buf, cap, n)
    )
    return token or None


def response_result(ev: Event) -> JSONData:
    """The value of a RESPONSE event, or its mapped exception raised."""
    st = ev.status
    if st == Status.OK:
        return ev.data
    raise ev.error or exception_for(st, _ffi.status_str(st), ev.request_id)


class RequestInFlight:
    """What a request in flight is on both kinds of client: its id, whether its reply has
    arrived (``done``, which each kind answers its own way), and its cancel."""

    __slots__ = ()

    id: int
    _core: Any

    def done(self) -> bool:
        """Whether the reply (of any kind) has arrived."""
        raise NotImplementedError

    def cancel(self) -> bool:
        """Asks the library to cancel the request (the server is told). Returns ``False`` if
        the reply had already arrived, or if the client has stopped (its reply is then on
        the way). The reply then arrives as ``RequestCancelledError``, unless the server's
        answer won the race."""
        if self.done():
            return False
        try:
            self._core.cancel(self.id)
        except (ClientClosedError, StateError, PanicError):
            # Freed, or the session already ended (by a panic, too): the request has its
            # reply on the way (CLIENT_CLOSED, CANCELLED for an earlier cancel, or PANIC).
            return False
        return True


class AsyncReply(RequestInFlight):
    """A request in flight on an asyncio client whose reply is awaited (``await r``), with
    the request's timeout plus a grace period; the base of :class:`tether.aio.AsyncTransfer`
    and :class:`tether.store.AsyncStoreRequest`. Cancelling the awaiting task cancels the
    request, as for ``AsyncClient.request``."""

    __slots__ = ("id", "what", "_core", "_fut", "_deadline")

    def __init__(self, core: Any, request_id: int, what: str, fut: Any, deadline: float) -> None:
        #: The library's id of the request.
        self.id: int = request_id
        #: What it does (``"upload_media"``, ``"paginate"``, ...).
        self.what: str = what
        self._core = core
        self._fut = fut
        self._deadline = deadline  # loop.time()

    def done(self) -> bool:
        """Whether the reply (of any kind) has arrived."""
        return self._fut.done()

    def _forget(self) -> None:
        """Called when the wait gives up (timeout, cancelled task): drops what the core keeps
        for this request."""

    async def result(self) -> JSONData:
        """The reply's data, or the mapped exception.

        :raises RemoteError: the backend refused or failed it (``.message``).
        :raises RequestTimeoutError: no reply in time (the request is cancelled).
        :raises ClientClosedError: the client was closed first.
        """
        import asyncio

        core = self._core
        left = max(0.0, self._deadline - core.loop.time())
        try:
            # shield: a timeout here must not cancel the future the delivery resolves.
            ev = await asyncio.wait_for(asyncio.shield(self._fut), left)
        except asyncio.TimeoutError:
            self._forget()
            core._cancel_quietly(self.id)
            raise RequestTimeoutError(
                f"{self.what}: no reply in time", request_id=self.id
            ) from None
        except asyncio.CancelledError:
            if not self._fut.done():
                self._forget()
                core._cancel_quietly(self.id)
            raise
        return response_result(ev)

    def __await__(self) -> Generator[Any, None, JSONData]:
        return self.result().__await__()

    def __repr__(self) -> str:
        state = "done" if self.done() else "pending"
        return f"<{type(self).__name__} {self.what} {self.id} {state}>"
