"""Events delivered by a client, and the batch reader that produces them."""

from __future__ import annotations

import ctypes
import enum
import json
from ctypes import byref, c_size_t, c_void_p
from typing import Any, Callable, Dict, List, Optional, Type

from . import _ffi
from .errors import InvalidArgumentError, Status, TetherError, exception_for

__all__ = ["EventKind", "Event", "JSONLoads", "ResumeOutcome"]

#: A JSON parser for event payloads: takes the raw bytes, returns the value (``json.loads``,
#: ``orjson.loads``, ...). See the ``json_loads`` option of :class:`tether.Client`.
JSONLoads = Callable[[bytes], Any]


class EventKind(enum.IntEnum):
    """``TETHER_EVENT_*``."""

    CONNECTING = 1
    """A connection attempt starts (``attempt``, ``resume_attempted``)."""
    CONNECTED = 2
    """The websocket is open (rwws: authenticated)."""
    DISCONNECTED = 3
    """The connection ended: ``status``, ``close_code``, ``reason``, ``retry_in_ms``."""
    MESSAGE = 4
    """A server event: ``command``, ``id`` (negative for buffered events), ``data``."""
    RESPONSE = 5
    """The reply to a request: it resolves the request (``request()``, ``submit()``, ...) and is
    never handed to ``events()`` or ``on_event``."""
    PONG = 6
    """A keepalive reply: ``rtt_us``, ``acked_id`` (gomuks), ``server_time_ms`` (rwws)."""
    PACKET = 7
    """rwws: a packet the library does not consume (``raw`` holds its bytes)."""
    CLOSED = 8
    """The client is closed; always the last event."""
    RESUMED = 9
    """gomuks: what became of the resume this connection asked for: ``resume_outcome``.
    Once per such connection, before the message that decided it (so before the fresh state
    of a reset, and before ``init_complete``); none if the connection ends before that."""
    TOKEN_RENEWED = 10
    """gomuks: a new token replaced the one the client held (renewed before expiry or after a
    401, or a new login); read it with ``auth_token()`` and persist it. Carries no secret. The
    first token of a password login is not announced."""
    PROGRESS = 11
    """In-process: progress of the media upload ``request_id``, ``progress`` as the backend reports it (gomuks v0.2607.0: a fraction from 0 to 1)
    (``raw`` holds the same number as JSON). The clients hand these to the upload's
    :class:`~tether.Transfer` (``Client.upload_media``), not to ``events()``."""
    CHUNK = 12
    """In-process: the next bytes of the media download ``request_id`` (``raw``), in order,
    before its RESPONSE. The clients hand these to the download's :class:`~tether.Transfer`
    (``Client.download_media``), not to ``events()``."""
    STORE = 13
    """A store attached to the client (``Client(..., store=True)``) applied an event or the
    answer to a store action: ``data`` is the JSON change set (``gen``, ``cause``, what
    changed: ``room_list``, ``rooms``, ``cleared``, ...; see :mod:`tether.store`). It follows
    the MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects and precedes the RESPONSE of a store action. Delivered like a
    MESSAGE (``events()``, ``on_event``, async iteration), and handed to the store's
    subscribers first (``Store.on_change``, ``Store.changes()``)."""
    SEND_READY = 14
    """A call raised :class:`~tether.SendBufferFullError`, and enough has been written (or has
    ended) since that the largest message refused would fit with at most half of
    ``max_unsent_bytes`` waiting: send again. One per run of refusals, however many calls
    were refused; an app that is never refused never sees one. Carries nothing."""
    UNSENT = 15
    """rwws: a packet the client took (``send_packet``, ``send_settings``) but never wrote,
    handed back as the client ends (``close()``, or a stop for good) so nothing is lost
    without a word: ``raw`` holds its bytes, ready to send on another client. One per packet,
    in the order sent, after the DISCONNECTED of a stop for good and before CLOSED;
    ``status`` is ``Status.ERR_CLIENT_CLOSED`` (``Status.ERR_PANIC`` after an internal
    panic, before its DISCONNECTED). Written means handed to the connection: what its
    buffers (the websocket writer's, about 128 KiB, and the kernel's) hold when it is cut, or
    when a close runs out of time against a peer that stopped reading, is lost with it; the
    protocol has no acknowledgement."""


class ResumeOutcome(enum.IntEnum):
    """``TETHER_RESUME_*``: the ``resume_outcome`` of a RESUMED event."""

    SUCCEEDED = 1
    """Every missed event is delivered exactly once: keep the cached state."""
    RESET = 2
    """The backend restarted or no longer held the resume point: drop the cached state (the
    fresh state follows, ``sync_complete`` with ``clear_state``)."""
    CAUGHT_UP = 3
    """The resume point was gone, but with ``last_server_ts`` configured the changes since then
    follow as one ``sync_complete`` with ``catchup``: keep the cached state and apply it (the
    missed events themselves are not delivered)."""


_OUTCOMES = {int(o): o for o in ResumeOutcome}


_KINDS = {int(k): k for k in EventKind}
_JSON_KINDS = (EventKind.MESSAGE, EventKind.RESPONSE, EventKind.PROGRESS, EventKind.STORE)
_MESSAGE = int(EventKind.MESSAGE)
_RESPONSE = int(EventKind.RESPONSE)
_STORE = int(EventKind.STORE)
_UNSET: Any = object()
# The defaults of the fields an Event keeps in its ``_x`` tuple, in that order.
_NO_RARE = (0, 0, None, None, 0, 0, False, None)
# Command names repeat; decode each distinct one once.
_COMMANDS: Dict[bytes, str] = {}


def _command(raw: bytes) -> str:
    s = _COMMANDS.get(raw)
    if s is None:
        s = raw.decode("utf-8", "replace")
        if len(_COMMANDS) < 4096:
            _COMMANDS[raw] = s
    return s


class Event:
    """One event. Cheap to create: the payload stays raw bytes until ``data`` is read.

    Attributes common to all kinds: ``kind`` (:class:`EventKind`), ``raw`` (the payload
    bytes). Fields that do not apply to a kind hold 0, ``""`` or ``None``.
    """

    __slots__ = ("kind", "request_id", "status", "command", "raw", "_data", "_batch", "_bi", "_x")

    kind: EventKind
    #: RESPONSE: the request's id; PONG: the ping's id; MESSAGE: the server's event id
    #: (negative for buffered events, 0 otherwise); PROGRESS, CHUNK: the upload's or
    #: download's request id.
    request_id: int
    #: RESPONSE: the outcome; DISCONNECTED: why the connection ended; UNSENT:
    #: ``Status.ERR_CLIENT_CLOSED``, or ``Status.ERR_PANIC`` after an internal panic; else
    #: ``Status.OK``.
    status: int
    #: MESSAGE: the gomuks command name (``sync_complete``, ``init_complete``, ...).
    command: str
    #: The payload exactly as received: JSON for MESSAGE, RESPONSE and STORE, the packet for
    #: PACKET and UNSENT, the close reason or error text for DISCONNECTED, the progress as JSON for PROGRESS,
    #: the file's next bytes for CHUNK.
    raw: bytes
    # The parser of ``data``; a client created with ``json_loads`` uses a subclass that
    # replaces it (event_class), so no event pays for carrying it.
    _loads: JSONLoads = staticmethod(json.loads)

    def __init__(
        self,
        kind: int,
        request_id: int = 0,
        status: int = 0,
        command: str = "",
        raw: bytes = b"",
        acked_id: int = 0,
        server_time_ms: int = 0,
        rtt_us: Optional[int] = None,
        retry_in_ms: Optional[int] = None,
        close_code: int = 0,
        attempt: int = 0,
        resume_attempted: bool = False,
        resume_outcome: int = 0,
    ) -> None:
        k = _KINDS.get(kind)  # a kind newer than this binding stays a plain int
        self.kind = k if k is not None else kind  # type: ignore[assignment]
        self.request_id = request_id
        self.status = status
        self.command = command
        self.raw = raw
        self._data = _UNSET
        self._batch: Optional[_BatchJSON] = None
        self._bi = 0
        # The fields few kinds use live in one tuple (None: all at their defaults), which
        # keeps the common MESSAGE cheap to build: the batch path sets only the five above.
        rare = (
            acked_id,
            server_time_ms,
            rtt_us,
            retry_in_ms,
            close_code,
            attempt,
            bool(resume_attempted),
            _OUTCOMES.get(resume_outcome) if resume_outcome else None,
        )
        self._x: Optional[tuple] = None if rare == _NO_RARE else rare

    def _rare(self, i: int) -> Any:
        x = self._x
        return _NO_RARE[i] if x is None else x[i]

    @property
    def acked_id(self) -> int:
        """PONG (gomuks): the event id the ping acknowledged (0 if none)."""
        return self._rare(0)  # type: ignore[no-any-return]

    @property
    def server_time_ms(self) -> int:
        """PONG (rwws): the server's unix time in milliseconds (0 if absent)."""
        return self._rare(1)  # type: ignore[no-any-return]

    @property
    def rtt_us(self) -> Optional[int]:
        """PONG: round-trip time in microseconds; ``None`` for other kinds and for a pong
        that answered no ping of ours (rwws: the server's pong that acknowledges
        authentication) or that may have waited unread while the app let the queue fill
        (the time would be the app's stall, not the network's)."""
        return self._rare(2)  # type: ignore[no-any-return]

    @property
    def retry_in_ms(self) -> Optional[int]:
        """DISCONNECTED: milliseconds until the next attempt; ``None`` when no retry
        follows."""
        return self._rare(3)  # type: ignore[no-any-return]

    @property
    def close_code(self) -> int:
        """DISCONNECTED: the websocket close code, 0 without a close frame, or the HTTP
        status."""
        return self._rare(4)  # type: ignore[no-any-return]

    @property
    def attempt(self) -> int:
        """CONNECTING, CONNECTED, DISCONNECTED: the attempt number, from 1."""
        return self._rare(5)  # type: ignore[no-any-return]

    @property
    def resume_attempted(self) -> bool:
        """CONNECTING, CONNECTED, DISCONNECTED: whether this connection asked to resume."""
        return self._rare(6)  # type: ignore[no-any-return]

    @property
    def resume_outcome(self) -> Optional[ResumeOutcome]:
        """RESUMED: :class:`ResumeOutcome`; ``None`` for other kinds."""
        return self._rare(7)  # type: ignore[no-any-return]

    @property
    def id(self) -> int:
        """Alias of ``request_id`` (for MESSAGE: the server's event id)."""
        return self.request_id

    @property
    def data(self) -> Any:
        """The payload parsed from JSON on first access (MESSAGE, RESPONSE, PROGRESS and
        STORE).

        ``None`` for kinds whose payload is not JSON (use ``raw`` or ``reason``).
        Raises ``ValueError`` if the bytes are not JSON. Parsed by ``json.loads``, or by the
        client's ``json_loads``.
        """
        d = self._data
        if d is _UNSET:
            batch = self._batch
            if batch is not None:
                # The batch's payloads were parsed together (or refused to be: then each
                # alone, so an error belongs to its own event).
                self._batch = None
                d = batch.get(self._bi)
            if d is _UNSET:
                if self.kind in _JSON_KINDS and self.raw:
                    d = self._loads(self.raw)
                else:
                    d = None
            self._data = d
        return d

    @property
    def progress(self) -> Optional[float]:
        """PROGRESS: how much of the upload is done (gomuks v0.2607.0: a fraction from 0 to 1), read from the payload
        (the number as JSON text, which is what the batch path carries); ``None`` for other
        kinds."""
        if self.kind != EventKind.PROGRESS:
            return None
        try:
            return float(self.raw)
        except ValueError:
            return None

    @property
    def reason(self) -> str:
        """DISCONNECTED: the close reason or error text; ``""`` otherwise."""
        if self.kind != EventKind.DISCONNECTED:
            return ""
        return self.raw.decode("utf-8", "replace")

    @property
    def error(self) -> Optional[TetherError]:
        """The exception matching a negative ``status`` (``None`` for success)."""
        if self.status >= 0:
            return None
        if self.kind == EventKind.RESPONSE and self.status == Status.ERR_REMOTE:
            return exception_for(self.status, remote_message(self.raw), self.request_id)
        if self.kind == EventKind.RESPONSE:
            # The library's reason (a JSON string): which timeout, why the client stopped.
            text = remote_message(self.raw) if self.raw else ""
        else:
            text = self.reason if self.kind == EventKind.DISCONNECTED else ""
        return exception_for(
            self.status, text or _ffi.status_str(self.status), self.request_id
        )

    def __repr__(self) -> str:
        parts = [self.kind.name if isinstance(self.kind, EventKind) else str(self.kind)]
        if self.command:
            parts.append(f"command={self.command!r}")
        if self.request_id:
            parts.append(f"id={self.request_id}")
        if self.status:
            try:
                parts.append(f"status={Status(self.status).name}")
            except ValueError:
                parts.append(f"status={self.status}")
        if self.kind == EventKind.PONG:
            parts.append(f"rtt_us={self.rtt_us} acked_id={self.acked_id}")
        if self.kind == EventKind.DISCONNECTED:
            parts.append(f"close_code={self.close_code} retry_in_ms={self.retry_in_ms}")
            parts.append(f"reason={self.reason!r}")
        elif self.kind in (EventKind.CONNECTING, EventKind.CONNECTED):
            parts.append(f"attempt={self.attempt} resume_attempted={self.resume_attempted}")
        elif self.resume_outcome is not None:
            parts.append(f"resume_outcome={self.resume_outcome.name}")
        elif self.kind == EventKind.PROGRESS:
            parts.append(f"progress={self.progress}")
        elif self.raw:
            parts.append(f"{len(self.raw)} bytes")
        return f"Event({', '.join(parts)})"


def event_class(loads: Optional[JSONLoads]) -> Type[Event]:
    """The Event class whose ``data`` parses with ``loads`` (``None``: ``json.loads``)."""
    if loads is None or loads is json.loads:
        return Event
    if not callable(loads):
        raise TypeError(f"json_loads must be callable, not {type(loads).__name__}")
    # One subclass per client; it shares Event's name, slots and methods.
    return type(
        "Event",
        (Event,),
        {"__slots__": (), "__module__": __name__, "__qualname__": "Event",
         "_loads": staticmethod(loads)},
    )


class _BatchJSON:
    """The JSON payloads of one batch, parsed by one ``loads`` call over a JSON array of them
    the first time any of its events' ``data`` is read: a call per batch instead of a call per
    event. Each payload is valid JSON on its own (the library checks what it delivers), so
    the array has exactly one element per payload; if it does not parse as that, every event
    parses its own payload instead, as without a batch, so an error stays with its event."""

    __slots__ = ("_raws", "_parsed", "_loads")

    def __init__(self, raws: List[bytes], loads: JSONLoads) -> None:
        self._raws: Optional[List[bytes]] = raws
        self._parsed: Any = None
        self._loads = loads

    def get(self, i: int) -> Any:
        """Payload ``i`` parsed, or ``_UNSET`` when the event must parse its own."""
        parsed = self._parsed
        if parsed is None:
            raws = self._raws or []
            try:
                # "[", p0, ",", p1, ..., "]" joined: one copy of the run, where adding the
                # brackets to a joined run copied it twice more (4-8 % of the parse of
                # 10 KiB payloads).
                parts = [b","] * (2 * len(raws) + 1)
                parts[1::2] = raws
                parts[0] = b"["
                parts[-1] = b"]"
                v = self._loads(b"".join(parts))
                parsed = v if type(v) is list and len(v) == len(raws) else False
            except Exception:  # any parser's error: one payload at a time instead
                parsed = False
            self._parsed = parsed
            self._raws = None
        return _UNSET if parsed is False else parsed[i]


#: The most payload bytes parsed by one ``loads`` call of a batch. Measured with ``json``
#: over realistic, 1 KiB and 10 KiB events: arrays of up to 16-64 KiB parse a third faster
#: than one payload at a time, while one array of a whole batch of large events is slower
#: (every value of the batch is alive at once).
BATCH_JSON_BYTES = 64 * 1024


def attach_batch_json(events: "List[Event]", loads: JSONLoads) -> None:
    """Lets the JSON payloads of ``events`` (in delivery order) be parsed together, in runs
    of consecutive payloads of at most :data:`BATCH_JSON_BYTES` together."""
    run: List[Event] = []
    size = 0
    for e in events:
        if not e.raw or e.kind not in _JSON_KINDS:
            continue
        n = len(e.raw)
        if run and size + n > BATCH_JSON_BYTES:
            _attach_run(run, loads)
            run, size = [], 0
        run.append(e)
        size += n
    _attach_run(run, loads)


def _attach_run(run: "List[Event]", loads: JSONLoads) -> None:
    if len(run) < 2:
        return
    batch = _BatchJSON([e.raw for e in run], loads)
    for i, e in enumerate(run):
        e._batch = batch
        e._bi = i


def remote_message(raw: bytes) -> str:
    """The text of an error reply (its data is a JSON string, or any JSON)."""
    try:
        v = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
    return v if isinstance(v, str) else json.dumps(v)


class BatchReader:
    """Owns one ``tether_batch`` and turns each ``tether_client_poll_batch`` into Events.

    Per batch: one ``poll_batch`` call, one ``batch_view`` call, one copy of the entries
    (decoded with one ``struct.Struct``) and one copy of each payload from the lent buffer.
    Not thread-safe: one thread at a time polls with it (the client's token), as the C batch.
    """

    def __init__(self, max_events: int = 256, event_cls: Type[Event] = Event) -> None:
        if not 1 <= max_events <= _ffi.int_range(c_size_t)[1]:
            # c_size_t would wrap -1 into a batch of every queued event.
            raise InvalidArgumentError(f"batch_size must be at least 1, not {max_events}")
        self._lib = _ffi.lib
        self._event_cls = event_cls
        self._handle: Optional[int] = _ffi.new_handle(self._lib.tether_batch_new, max_events)
        # Also as a machine word, which leak checkers can see (see Handle).
        self._word = c_void_p(self._handle)
        self._count = c_size_t()
        self._entries = c_void_p()
        self._n = c_size_t()
        self._bytes = c_void_p()
        self._len = c_size_t()

    def poll(self, client: int, timeout_ms: int) -> "tuple[int, List[Event]]":
        """Returns ``(status, events)``; status is OK, TIMEOUT or CLOSED (errors raise)."""
        lib = self._lib
        st = lib.tether_client_poll_batch(client, timeout_ms, self._handle, byref(self._count))
        if st != Status.OK:
            _ffi.check(st, "poll")
            return st, []
        _ffi.check(
            lib.tether_batch_view(
                self._handle,
                byref(self._entries),
                byref(self._n),
                byref(self._bytes),
                byref(self._len),
            ),
            "batch view",
        )
        n = self._n.value
        entries = ctypes.string_at(self._entries.value or 0, n * 80) if n else b""
        size = self._len.value
        # The payloads are copied once, each into its own bytes, straight from the batch's
        # buffer (a copy of the whole buffer first costs as much again for large events).
        mem: Any = (ctypes.c_char * size).from_address(self._bytes.value) if size else b""
        with memoryview(mem).cast("B") as buf:
            return st, self._events(entries, buf)

    def delivered(self) -> None:
        """The events of the last poll are where the app takes them from (or were handed to
        it): the library counts them as taken in the resume state from now on."""
        if self._handle is not None:
            self._lib.tether_batch_clear(self._handle)

    def _events(self, entries: bytes, buf: memoryview) -> List[Event]:
        out: List[Event] = []
        append = out.append
        cls = self._event_cls
        new = object.__new__
        commands = _COMMANDS
        # A batch stores each command name once: turned into a str once per batch.
        names: Dict[int, str] = {}
        # Unpacked into names rather than indexed per use: about 4 % of building an event.
        for i, (rid, at, size, kind, status, cmd_at, cmd_len) in enumerate(
            _ffi.BATCH_ENTRY_COMMON.iter_unpack(entries)
        ):
            if kind == _MESSAGE or kind == _RESPONSE or kind == _STORE:
                # The bulk of every stream: only the fields these kinds carry, set directly
                # (a fifth of the cost of __init__ with every field).
                ev = new(cls)
                ev.kind = _KINDS[kind]
                ev.request_id = rid
                ev.status = status
                if cmd_len:
                    name = names.get(cmd_at)
                    if name is None:
                        b = buf[cmd_at : cmd_at + cmd_len].tobytes()
                        name = names[cmd_at] = commands.get(b) or _command(b)
                    ev.command = name
                else:
                    ev.command = ""
                ev.raw = buf[at : at + size].tobytes()
                ev._data = _UNSET
                ev._batch = None
                ev._bi = 0
                ev._x = None
                append(ev)
                continue
            (
                request_id,
                data_off,
                data_len,
                acked_id,
                server_time_ms,
                rtt_us,
                retry_in_ms,
                kind,
                status,
                cmd_off,
                cmd_len,
                attempt,
                close_code,
                resume,
                outcome,
            ) = _ffi.BATCH_ENTRY.unpack_from(entries, i * _ffi.BATCH_ENTRY.size)
            append(
                cls(
                    kind,
                    request_id,
                    status,
                    _command(buf[cmd_off : cmd_off + cmd_len].tobytes()) if cmd_len else "",
                    buf[data_off : data_off + data_len].tobytes(),
                    acked_id,
                    server_time_ms,
                    None if rtt_us < 0 else rtt_us,
                    None if retry_in_ms < 0 else retry_in_ms,
                    close_code,
                    attempt,
                    bool(resume),
                    outcome,
                )
            )
        if cls._loads is json.loads:
            # Measured: one json.loads over the batch saves a third of the parse; orjson
            # parses one payload at a time faster than an array of them.
            attach_batch_json(out, json.loads)
        return out

    def free(self) -> None:
        """Frees the batch (idempotent)."""
        h, self._handle = self._handle, None
        if h:
            self._lib.tether_batch_free(h)
            self._word.value = None

    def __del__(self) -> None:
        try:
            self.free()
        except Exception:  # pragma: no cover - interpreter teardown
            pass


def event_from_pointer(ev: int, cls: Type[Event] = Event) -> Event:
    """Copies a borrowed ``tether_event *`` (callback mode) into an Event of the client's
    class ``cls``."""
    lib = _ffi.lib
    kind = lib.tether_event_kind(ev)
    ptr = c_void_p()
    n = c_size_t()
    raw = b""
    if lib.tether_event_data(ev, byref(ptr), byref(n)) == Status.OK:
        raw = _ffi.borrowed_bytes(ptr.value, n.value)
    if kind == EventKind.MESSAGE:
        return cls(
            kind,
            lib.tether_event_request_id(ev),
            0,
            _command(lib.tether_event_command(ev) or b""),
            raw,
        )
    if kind == EventKind.RESPONSE:
        return cls(kind, lib.tether_event_request_id(ev), lib.tether_event_status(ev), "", raw)
    if kind == EventKind.PONG:
        rtt = lib.tether_event_rtt_us(ev)
        return cls(
            kind,
            lib.tether_event_request_id(ev),
            0,
            "",
            raw,
            lib.tether_event_acked_id(ev),
            lib.tether_event_server_time_ms(ev),
            None if rtt < 0 else rtt,
        )
    if kind in (EventKind.CONNECTING, EventKind.CONNECTED, EventKind.DISCONNECTED):
        retry = lib.tether_event_retry_in_ms(ev)
        return cls(
            kind,
            0,
            lib.tether_event_status(ev),
            "",
            raw,
            retry_in_ms=None if retry < 0 else retry,
            close_code=lib.tether_event_close_code(ev),
            attempt=lib.tether_event_attempt(ev),
            resume_attempted=bool(lib.tether_event_resume_attempted(ev)),
        )
    if kind == EventKind.RESUMED:
        return cls(kind, resume_outcome=lib.tether_event_resume_outcome(ev))
    return cls(kind, lib.tether_event_request_id(ev), lib.tether_event_status(ev), "", raw)
