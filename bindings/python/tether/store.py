"""The native gomuks store: :class:`Store` (blocking) and :class:`AsyncStore` (asyncio).

A store keeps the room list, timelines, state, receipts, typing and local echo of one gomuks
client, applied by the library from the client's own events on its session thread. Attach it
when the client is created, since the store must see every event from the first:

>>> client = tether.Client(url, username="me", password="...", store=True)
>>> store = client.store
>>> for room in store.room_list(limit=10)["rooms"]:
...     print(room["name"], room["unread_messages"])
>>> store.paginate("!room:example.org").wait()      # older history, applied before it returns
>>> store.timeline("!room:example.org")["events"]

**How STORE events reach the app.** Each time the store applies something it announces a
change set, a ``TETHER_EVENT_STORE`` event (:attr:`EventKind.STORE`) whose ``data`` is the
JSON ``{"gen", "cause", "room_list"?, "rooms"?, "cleared"?, ...}``. One rule: a STORE event
is an ordinary event of the client (``events()``, ``next_event()``, ``on_event``, ``async
for``), in order, right after the MESSAGE (or CONNECTED, DISCONNECTED with a retry) it reflects and before the RESPONSE of a store
action; and the thread that delivers it hands its change set to the store's subscribers
(:meth:`Store.on_change` callbacks, :meth:`Store.changes` streams) *before* the event is
queued for the app. Nothing is diverted: a subscriber is an extra view of the same events,
so the app must still consume its client's events (or use ``on_event``), as without a store;
a client whose event queue is full stops taking events, for the store's subscribers too.

A read made after any event was taken (or a change set was received, or a store action's
reply arrived) sees what that event changed.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import threading
import time
import weakref
from collections import deque
from ctypes import byref, c_int64, c_size_t, create_string_buffer
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

from . import _ffi
from ._base import (
    REQUEST_GRACE_S,
    AsyncReply,
    CoreBase,
    Handle,
    call_app,
    forked_since,
    keep_first,
    log,
)
from ._options import _cstr
from .errors import (
    InvalidArgumentError,
    StateError,
    Status,
    exception_for,
)
from .events import Event, EventKind

if TYPE_CHECKING:
    from .aio import _AsyncCore
    from .client import PendingRequest, _SyncCore

__all__ = [
    "Store",
    "AsyncStore",
    "ChangeStream",
    "AsyncChangeStream",
    "AsyncStoreRequest",
    "READS",
    "StoreOptions",
]

#: What :meth:`Store.read` can ask for (``tether_store_read``'s ``what``).
READS = (
    "room_list",
    "room",
    "timeline",
    "event",
    "state",
    "members",
    "receipts",
    "typing",
    "account_data",
    "spaces",
    "session",
)

#: ``store=`` of the clients: ``True`` (default options) or a mapping of the store's options
#: (``{"evict_after_ms": N}``).
StoreOptions = Union[bool, Mapping[str, Any]]

#: The read buffer each thread starts with (most snapshots fit: one call per read).
_INITIAL_BUFFER = 64 * 1024
#: A thread keeps a grown buffer up to this size; a larger snapshot gets a buffer of its own.
_KEEP_BUFFER = 4 * 1024 * 1024
_tls = threading.local()


def _store_closed() -> StateError:
    return StateError("the store is closed (Store.close() was called)", Status.ERR_STATE)


def _options_json(options: Mapping[str, Any]) -> Optional[bytes]:
    if not isinstance(options, Mapping):
        raise TypeError(f"store options must be a mapping, not {type(options).__name__}")
    opts = {k: v for k, v in options.items() if v is not None}
    if not opts:
        return None
    return json.dumps(opts, separators=(",", ":")).encode("utf-8")


def _new_store(client_ptr: int, options: Optional[bytes]) -> int:
    return _ffi.new_handle(_ffi.lib.tether_store_new, client_ptr, options)


def _free_store(handle: Handle, process: object, pid: int) -> None:
    """The store's finaliser. In a child forked after the store was made it does nothing:
    a call in flight at the fork never returns there, so freeing would wait for it for ever,
    and the library refuses every call in a child anyway."""
    if not forked_since(process, pid):
        handle.free()


def _read(ptr: int, what: bytes, args: Optional[bytes]) -> bytes:
    """One ``tether_store_read`` into this thread's buffer, growing it while the snapshot
    does not fit (the store may grow between two calls); returns the JSON bytes."""
    buf = getattr(_tls, "buf", None)
    if buf is None:
        buf = _tls.buf = create_string_buffer(_INITIAL_BUFFER)
    n = c_size_t()
    read = _ffi.lib.tether_store_read
    while True:
        st = read(ptr, what, args, buf, len(buf), byref(n))
        if st == Status.ERR_BUFFER_TOO_SMALL:
            size = max(n.value + 1, len(buf) * 2)
            buf = create_string_buffer(size)
            if size <= _KEEP_BUFFER:
                _tls.buf = buf
            continue
        if st < 0:
            raise _ffi.error(st, f"store read {what.decode()!r}")
        return ctypes.string_at(buf, n.value)


def _act(ptr: int, fn: Any, args: Tuple[Any, ...], rid: c_int64) -> Tuple[int, str]:
    st = fn(ptr, *args, byref(rid))
    return st, (_ffi.last_error() if st < 0 else "")


def _plain(ptr: int, fn: Any, args: Tuple[Any, ...]) -> Tuple[int, str]:
    st = fn(ptr, *args)
    return st, (_ffi.last_error() if st < 0 else "")


def _rowid(rowid: int) -> int:
    # bool is an int too, and True would name event 1.
    if not isinstance(rowid, int) or isinstance(rowid, bool):
        raise TypeError(f"rowid must be an int, not {type(rowid).__name__}")
    if not -(2**63) <= rowid < 2**63:
        raise InvalidArgumentError(f"rowid {rowid} is out of range", Status.ERR_INVALID_ARGUMENT)
    return rowid


def _room(room_id: str) -> bytes:
    if not room_id:
        raise InvalidArgumentError("room_id is empty", Status.ERR_INVALID_ARGUMENT)
    return _cstr("room_id", room_id)


class _Hub:
    """The store's subscribers. The thread that delivers the client's events calls
    :meth:`publish` with each STORE event before it queues the event for the app."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.callbacks: List[Callable[[Any], Any]] = []
        self.streams: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self.closed = False

    def publish(self, ev: Event) -> Optional[BaseException]:
        """Hands ``ev`` to every stream and callback; returns the first ``SystemExit`` or
        ``KeyboardInterrupt`` a callback raised, for the caller to raise once its batch is
        delivered (:func:`tether._base.call_app`)."""
        with self.lock:
            if self.closed:
                return None
            streams = list(self.streams)
            callbacks = list(self.callbacks)
        for s in streams:
            s._push(ev)
        first: Optional[BaseException] = None
        if callbacks:
            try:
                change = ev.data
            except Exception:
                # The app's json_loads failed: its callbacks miss this change set, and the
                # rest of the batch (RESPONSEs among them) is still delivered.
                log.exception("tether: a change set could not be parsed for on_change")
                return None
            for cb in callbacks:
                first = keep_first(first, call_app(cb, change, "a store on_change callback"))
        return first

    def add_stream(self, s: Any) -> None:
        with self.lock:
            self.streams.add(s)

    def remove_stream(self, s: Any) -> None:
        with self.lock:
            self.streams.discard(s)

    def close(self) -> List[Any]:
        with self.lock:
            self.closed = True
            self.callbacks.clear()
            streams = list(self.streams)
            self.streams.clear()
        return streams


class _StoreBase:
    """What both flavours share: the handle, the reads, the actions' native calls."""

    _core: CoreBase
    _hub: _Hub
    _handle: Handle

    def __init__(self, client: Any, evict_after_ms: Optional[int] = None) -> None:
        core = getattr(client, "_core", None)
        if not isinstance(core, CoreBase) or not self._fits(core):
            raise TypeError(
                f"{type(self).__name__} needs a {self._client_kind()}, not "
                f"{type(client).__name__}"
            )
        try:
            self._setup(core, {"evict_after_ms": evict_after_ms})
        except StateError as e:
            if e.status != Status.ERR_STATE:
                raise
            raise StateError(
                f"{e.message}; a store must see the client's first event, and the client "
                "connects in its constructor: create it with store=True (or "
                "store={'evict_after_ms': N}) and use client.store",
                Status.ERR_STATE,
            ) from None

    @staticmethod
    def _fits(core: CoreBase) -> bool:  # pragma: no cover - overridden
        raise NotImplementedError

    @staticmethod
    def _client_kind() -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def _attach(cls, core: CoreBase, options: StoreOptions) -> Any:
        """For the clients' constructors, between ``tether_client_new`` and connect.
        ``options``: ``True`` or a mapping of the store's options."""
        if options is True:
            options = {}
        elif not isinstance(options, Mapping):
            raise TypeError(
                "store must be True or a mapping of store options "
                f"({{'evict_after_ms': N}}), not {options!r}"
            )
        self = cls.__new__(cls)
        self._setup(core, options)
        return self

    def _setup(self, core: CoreBase, options: Mapping[str, Any]) -> None:
        opts = _options_json(options)
        evict = options.get("evict_after_ms")
        if evict is not None and (not isinstance(evict, int) or evict < 0):
            raise InvalidArgumentError(
                f"evict_after_ms must be a non-negative int, not {evict!r}",
                Status.ERR_INVALID_ARGUMENT,
            )
        timeout = options.get("request_timeout_ms")
        #: The store's own request timeout in seconds, ``None``: the client's.
        self._request_timeout: Optional[float] = (
            timeout / 1000 if isinstance(timeout, int) and timeout > 0 else None
        )
        core.check_pid()
        ptr = core.handle.call(_new_store, opts)
        self._core = core
        self._handle = Handle(ptr, _ffi.lib.tether_store_free, _store_closed)
        # Frees (and detaches) the store when the Store is collected, or at exit.
        self._finalizer = weakref.finalize(self, _free_store, self._handle, core.process, core.pid)
        self._hub = core.store_hub = _Hub(core.queue_limit)
        self._loads = core.event_cls._loads

    # -- lifetime --------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (reads and actions then raise StateError)."""
        return not self._handle.live

    def close(self) -> None:
        """Frees the store and detaches it from the client (``tether_store_free``): reads
        and actions raise :class:`StateError` from now on, ``on_change`` callbacks are
        dropped, ``changes()`` streams end once drained, and the client's events carry no
        more STORE events. The client itself goes on. Idempotent; a Store nobody references
        any more is closed by the garbage collector (or at exit).

        :raises ForkedError: in a child process after ``fork()``.
        """
        self._core.check_pid()
        for s in self._hub.close():
            s._end()
        self._finalizer()

    # -- reads -----------------------------------------------------------------------------

    def read(self, what: str, args: Optional[Mapping[str, Any]] = None) -> Any:
        """One snapshot as parsed JSON: ``what`` is one of :data:`READS`, ``args`` its
        arguments (``None``: none). The typed methods below call this.

        :raises InvalidArgumentError: unknown ``what``, bad arguments, an unknown room.
        :raises StateError: the store is closed.
        """
        if what not in READS:
            raise InvalidArgumentError(
                f"unknown store read {what!r}; one of {', '.join(READS)}",
                Status.ERR_INVALID_ARGUMENT,
            )
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(f"read arguments must be a mapping, not {type(args).__name__}")
        payload = (
            json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            if args
            else None
        )
        self._core.check_pid()
        raw = self._handle.call(_read, what.encode(), payload)
        return self._loads(raw)

    def _room_read(self, what: str, room_id: str, **args: Any) -> Any:
        if not isinstance(room_id, str):
            raise TypeError(f"room_id must be a str, not {type(room_id).__name__}")
        a = {"room_id": room_id}
        a.update({k: v for k, v in args.items() if v is not None})
        return self.read(what, a)

    def room_list(
        self,
        space: Optional[str] = None,
        query: Optional[str] = None,
        order: Optional[str] = None,
        favourites_first: Optional[bool] = None,
        low_priority_last: Optional[bool] = None,
        invites: Optional[bool] = None,
        limit: Optional[int] = None,
    ) -> Dict[str, Any]:
        """The room list: ``{"gen", "total", "rooms": [entry, ...]}``, invites first, then
        favourites (unless ``favourites_first=False``), low priority last (unless
        ``low_priority_last=False``), each group by activity (``order="activity"``, the
        default) or by name (``order="name"``). Spaces and tombstoned rooms are not listed.
        ``space``: a space's room id, or ``"home"`` (default), ``"dms"``, ``"unreads"``,
        ``"orphans"``; ``query``: case-insensitive substring of the name or room id;
        ``invites=False`` leaves invites out; ``limit`` cuts the list (``total`` does not).
        Each entry: ``room_id``, ``name``, ``dm_user_id``, ``sorting_timestamp``,
        ``unread_messages``, ``unread_notifications``, ``unread_highlights``,
        ``marked_unread``, ``favourite``, ``low_priority``, ``invite``, ``preview``, ..."""
        args = {
            "space": space,
            "query": query,
            "order": order,
            "favourites_first": favourites_first,
            "low_priority_last": low_priority_last,
            "invites": invites,
            "limit": limit,
        }
        return self.read("room_list", {k: v for k, v in args.items() if v is not None})

    def room(self, room_id: str) -> Optional[Dict[str, Any]]:
        """One room: ``meta`` (gomuks' room row), ``entry`` (as in the room list),
        ``timeline_rows``, ``pending``, ``has_more``, ``paginating``, ``state_loaded``,
        ``members_loaded``, ``open``, ``typing``; an invite's stripped state; ``None`` for
        a room the store does not know."""
        return self._room_read("room", room_id)

    def timeline(
        self, room_id: str, before: Optional[int] = None, limit: Optional[int] = None
    ) -> Dict[str, Any]:
        """The newest ``limit`` (default 50) timeline rows the store holds, or those older
        than the timeline rowid ``before``: ``{"events": [{"timeline_rowid", "event",
        "edit"?}], "pending": [{"event"}], "oldest", "has_more", "paginating"}``, oldest
        first. ``pending`` (newest page only) lists local echoes not synced yet (a failed
        one has ``send_error``). :meth:`paginate` loads more from the backend."""
        return self._room_read("timeline", room_id, before=before, limit=limit)

    def event(
        self, room_id: str, event_id: Optional[str] = None, rowid: Optional[int] = None
    ) -> Optional[Dict[str, Any]]:
        """One event by ``event_id`` or ``rowid`` (exactly one of them): ``{"event",
        "edit"?}``, or ``None`` if the store does not hold it."""
        if (event_id is None) == (rowid is None):
            raise InvalidArgumentError(
                "event() takes exactly one of event_id and rowid", Status.ERR_INVALID_ARGUMENT
            )
        return self._room_read("event", room_id, event_id=event_id, rowid=rowid)

    def state(
        self, room_id: str, type: Optional[str] = None, state_key: Optional[str] = None
    ) -> Any:
        """Room state: every type (``{type: {state_key: event}}``), one type
        (``{state_key: event}``) or one event (``None`` if absent). The initial sync carries
        little state: :meth:`load_state` loads all of it."""
        if state_key is not None and type is None:
            raise InvalidArgumentError(
                "state(): state_key needs a type", Status.ERR_INVALID_ARGUMENT
            )
        return self._room_read("state", room_id, type=type, state_key=state_key)

    def members(self, room_id: str) -> Dict[str, Any]:
        """Joined, invited and knocking members, highest power level first, then by name:
        ``{"members": [{"user_id", "membership", "displayname", "avatar_url",
        "power_level"}], "complete"}`` (``complete`` once ``load_state(members=True)``
        loaded the member list)."""
        return self._room_read("members", room_id)

    def receipts(self, room_id: str, event_id: Optional[str] = None) -> Dict[str, Any]:
        """Read receipts by event id (``{event_id: [receipt, ...]}``), all or one event's."""
        return self._room_read("receipts", room_id, event_id=event_id)

    def typing(self, room_id: str) -> List[str]:
        """The user ids typing in the room now."""
        return self._room_read("typing", room_id)["user_ids"]

    def account_data(self, type: Optional[str] = None, room_id: Optional[str] = None) -> Any:
        """Account data: global, or the room's with ``room_id``; every type
        (``{type: event}``) or one (``None`` if absent)."""
        if room_id is not None:
            return self._room_read("account_data", room_id, type=type)
        return self.read("account_data", {"type": type} if type is not None else None)

    def spaces(self) -> Dict[str, Any]:
        """Spaces: ``{"top_level", "spaces": {id: {"name", "children", "unread"}},
        "pseudo": {"home"|"dms"|"unreads"|"orphans": unread counts}}``."""
        return self.read("spaces")

    def session(self) -> Dict[str, Any]:
        """The session: ``gen``, ``client_state``, ``sync_status``, ``init_complete``,
        ``rooms``, ``invites``, ..."""
        return self.read("session")

    # -- room flags ------------------------------------------------------------------------

    def _plain(self, what: str, fn: Any, *args: Any) -> None:
        self._core.check_pid()
        st, err = self._handle.call(_plain, fn, args)
        if st < 0:
            raise exception_for(st, f"{what}: {err}")

    def open_room(self, room_id: str) -> None:
        """The app shows this room: it keeps its timeline (no eviction), and its change sets
        carry every detail whatever the watch list says. :raises InvalidArgumentError:
        unknown room."""
        self._plain("open_room", _ffi.lib.tether_store_set_open, _room(room_id), True)

    def close_room(self, room_id: str) -> None:
        """The app no longer shows this room: its timeline is evicted once it was idle for
        ``evict_after_ms`` (default 30 minutes)."""
        self._plain("close_room", _ffi.lib.tether_store_set_open, _room(room_id), False)

    def watch(self, room_id: Optional[str] = None, on: bool = True) -> None:
        """Limits the detail of change sets: ``watch()`` watches every room (the default);
        ``watch(on=False)`` only the open rooms; ``watch(room_id, on)`` adds or removes one.
        Rooms not watched report only ``meta``, ``removed`` and the notification fields (what
        a room list and OS notifications need). Open rooms are always watched; a room joined
        later is watched after ``watch()``, not after ``watch(on=False)``; a room left is
        forgotten with its setting. :raises InvalidArgumentError: unknown room."""
        rid = None if room_id is None else _room(room_id)
        self._plain("watch", _ffi.lib.tether_store_watch, rid, bool(on))

    def discard(self, room_id: str, rowid: int) -> None:
        """Drops a failed send (a ``pending`` item of :meth:`timeline` whose ``send_status``
        is ``failed``; ``rowid`` is its event's) from the room's pending tail, as gomuks
        web's "undo send"; the backend keeps its copy. A change set with cause ``discard``
        reports it (a watched or open room's, while the client is open). Works after the
        client closed. :raises InvalidArgumentError: ``rowid`` is not a failed send in the
        room's pending tail."""
        self._plain("discard", _ffi.lib.tether_store_discard, _room(room_id), _rowid(rowid))

    def collect_garbage(self) -> int:
        """Evicts now the timelines of rooms not open and idle for ``evict_after_ms``;
        returns how many rooms lost theirs (a change set with cause "gc" reports them at once)."""
        self._core.check_pid()
        n = c_size_t()
        self._plain("collect_garbage", _ffi.lib.tether_store_collect_garbage, byref(n))
        return n.value

    # -- actions ---------------------------------------------------------------------------

    def _start(self, what: str, fn: Any, *args: Any) -> int:
        """Sends a store action; returns its request id (0: nothing was sent)."""
        core = self._core
        core.check_pid()
        if core.closing or core.closed:
            raise core.closed_error()
        rid = c_int64()
        st, err = self._handle.call(_act, fn, args, rid)
        if st < 0:
            if st == Status.ERR_STATE and (core.closing or core.closed or not core.handle.live):
                raise core.closed_error()
            raise exception_for(st, f"{what}: {err}")
        return rid.value

    def _paginate(self, room_id: str, limit: int) -> int:
        if not isinstance(limit, int) or not 0 <= limit <= 0xFFFFFFFF:
            raise InvalidArgumentError(
                f"paginate limit must be an int from 0 (auto) to 2^32-1, not {limit!r}",
                Status.ERR_INVALID_ARGUMENT,
            )
        return self._start("paginate", _ffi.lib.tether_store_paginate, _room(room_id), limit)

    def _load_state(self, room_id: str, members: bool) -> int:
        return self._start(
            "load_state", _ffi.lib.tether_store_load_state, _room(room_id), bool(members)
        )

    def _send_message(self, room_id: str, text: str, extra: Mapping[str, Any]) -> int:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, not {type(text).__name__}")
        params = dict(extra)
        params["room_id"] = room_id
        params["text"] = text
        _room(room_id)
        payload = json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self._start("send_message", _ffi.lib.tether_store_send_message, payload)

    def _resend(self, room_id: str, rowid: int) -> int:
        return self._start("resend", _ffi.lib.tether_store_resend, _room(room_id), _rowid(rowid))

    def _mark_read(self, room_id: str, receipt_type: Optional[str]) -> int:
        rt = None if receipt_type is None else _cstr("receipt_type", receipt_type)
        return self._start("mark_read", _ffi.lib.tether_store_mark_read, _room(room_id), rt)

    def _request_members(self, room_id: str, user_ids: Iterable[str]) -> int:
        if isinstance(user_ids, (str, bytes)):
            raise TypeError("user_ids must be a list of user ids, not one string")
        ids = list(user_ids)
        for u in ids:
            if not isinstance(u, str):
                raise TypeError(f"user ids must be str, not {type(u).__name__}")
        payload = json.dumps(ids, ensure_ascii=False).encode("utf-8")
        return self._start(
            "request_members", _ffi.lib.tether_store_request_members, _room(room_id), payload
        )

    def __repr__(self) -> str:
        return f"<tether.{type(self).__name__} {'closed' if self.closed else 'open'}>"


# -- the blocking store ------------------------------------------------------------------


class _Stream:
    """What both change streams share: the bounded buffer the delivering thread fills."""

    def __init__(self, hub: _Hub, deadline: Optional[float]) -> None:
        self._hub = hub
        self._items: Deque[Event] = deque()
        self._limit = hub.limit
        self._deadline = deadline
        self._ended = False
        #: Change sets dropped because this stream was not read fast enough.
        self.missed = 0

    def _push(self, ev: Event) -> None:
        # The delivering thread; deque operations are atomic under the GIL.
        if len(self._items) >= self._limit:
            self._items.popleft()
            self.missed += 1
        self._items.append(ev)
        self._pushed()

    def _pushed(self) -> None:
        """Wakes a reader, where that takes more than the delivery's own notify."""

    def pending(self) -> int:
        """Change sets waiting to be read."""
        return len(self._items)


class ChangeStream(_Stream):
    """Change sets of a :class:`Store` as they are delivered (from :meth:`Store.changes`):
    an iterator of parsed change-set dicts, oldest first. It collects from its creation, so
    nothing is missed between creating it and the first ``next()``. Waiting on it delivers
    the client's events when no other thread does (as ``request()`` does). The iteration
    ends after the client's CLOSED, after :meth:`close` (or the store's), or at the
    ``timeout`` given to :meth:`Store.changes` (a deadline for the whole loop).

    At most ``event_queue_size`` change sets wait here; past that the oldest are dropped
    and counted in :attr:`missed` (``gen`` then skips: re-read what you show)."""

    def __init__(self, store: "Store", deadline: Optional[float]) -> None:
        super().__init__(store._hub, deadline)
        self._core: "_SyncCore" = store._core  # type: ignore[assignment]
        self._hub.add_stream(self)
        if self._hub.closed:
            self._ended = True

    def _end(self) -> None:
        self._ended = True
        core = self._core
        with core.cond:
            core.cond.notify_all()

    def get(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next change set, waiting up to ``timeout`` seconds (``None``: no limit, within
        the stream's deadline); ``None`` on timeout or once the stream ended.

        :raises StateError: inside ``on_event`` or an ``on_change`` callback (change sets are
            delivered on that thread: waiting there would wait forever)."""
        core = self._core
        core.check_can_wait("a store change")
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._deadline is not None:
            deadline = self._deadline if deadline is None else min(deadline, self._deadline)
        items = self._items
        if not items and not self._ended:
            if core.on_event is None and core.on_delivery_thread():
                raise StateError(
                    "waiting for a store change on the thread that delivers them",
                    Status.ERR_STATE,
                )
            core.wait_until(lambda: bool(items) or self._ended, deadline)
        try:
            ev = items.popleft()
        except IndexError:
            return None
        return ev.data

    def __iter__(self) -> "ChangeStream":
        return self

    def __next__(self) -> Dict[str, Any]:
        change = self.get()
        if change is None:
            raise StopIteration
        return change

    def close(self) -> None:
        """Stops collecting (idempotent); what was collected can still be read."""
        self._hub.remove_stream(self)
        self._ended = True

    def __enter__(self) -> "ChangeStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class Store(_StoreBase):
    """The store of a blocking :class:`tether.Client` created with ``store=True``
    (``client.store``). Reads return parsed JSON snapshots; actions return the client's
    :class:`tether.PendingRequest` (``.wait()``, ``.result()``, ``.cancel()``), whose reply
    arrives after the store applied the answer (and after its change set was delivered).
    Every method may be called from any thread.

    ``Store(client, evict_after_ms=None)`` attaches a store to a client that has not
    connected yet; the Python clients connect in their constructor, so use ``store=True``
    there (``store={"evict_after_ms": N}`` for the options) and read ``client.store``.
    """

    _core: "_SyncCore"

    @staticmethod
    def _fits(core: CoreBase) -> bool:
        from .client import _SyncCore

        return isinstance(core, _SyncCore)

    @staticmethod
    def _client_kind() -> str:
        return "tether.Client (tether.aio.AsyncClient has AsyncStore)"

    # -- actions ---------------------------------------------------------------------------

    def _pending(self, rid: int) -> "PendingRequest":
        core = self._core
        if rid == 0:
            from .client import PendingRequest

            p = PendingRequest(core, 0)
            p._resolve(Event(EventKind.RESPONSE, 0, Status.OK, "", b""))
            return p
        return core.adopt(rid, self._request_timeout)

    def paginate(self, room_id: str, limit: int = 0) -> "PendingRequest":
        """Loads older history of the room (``paginate``); ``limit`` 0 picks 50 (100 once
        100 rows are cached). The reply (gomuks' pagination response) arrives after the
        rows were prepended (rows newer than the newest cached one: appended);
        :meth:`timeline` then shows them.

        :raises InUseError: a pagination of this room is running.
        :raises InvalidArgumentError: a room the store does not know.
        :raises StateError: over the websocket, the backend says it is not logged in.
        :raises ClientClosedError: the client is closed."""
        return self._pending(self._paginate(room_id, limit))

    def load_state(self, room_id: str, members: bool = False) -> "PendingRequest":
        """Loads the room's whole state (``get_room_state``), with the member list when
        ``members`` (then :meth:`members` is ``complete``)."""
        return self._pending(self._load_state(room_id, members))

    def send_message(self, room_id: str, text: str, **extra: Any) -> "PendingRequest":
        """Sends a text message with local echo (``send_message``; ``extra`` adds its other
        parameters: ``base_content``, ``relates_to``, ``mentions``, ...). The echo is in
        :meth:`timeline`'s ``pending`` when the reply arrives; the synced event replaces it
        later (a failed send keeps it, with ``send_error``)."""
        return self._pending(self._send_message(room_id, text, extra))

    def resend(self, room_id: str, rowid: int) -> "PendingRequest":
        """Sends a failed message again (``resend_event``; ``rowid`` is the failed
        ``pending`` item's event's). The echo reads as ``sending`` at once (a change set with
        cause ``resend``, before this returns); its ``send_complete`` updates it as after
        :meth:`send_message`. If the backend refuses, the reply fails and the echo is failed
        again.

        :raises InvalidArgumentError: ``rowid`` is not a failed send in the room's pending
            tail.
        :raises ClientClosedError: the client is closed."""
        return self._pending(self._resend(room_id, rowid))

    def mark_read(self, room_id: str, receipt_type: Optional[str] = None) -> "PendingRequest":
        """Marks the room read up to the newest event the store holds (``receipt_type``
        default ``m.read``); the unread counts change with the backend's next sync.

        :raises InvalidArgumentError: the store holds no event of the room."""
        return self._pending(self._mark_read(room_id, receipt_type))

    def request_members(self, room_id: str, user_ids: Iterable[str]) -> "PendingRequest":
        """Fetches the member events of ``user_ids`` the store lacks, in one request. When
        none is missing nothing is sent: the returned request (id 0) is already done, with
        the result ``None``."""
        return self._pending(self._request_members(room_id, user_ids))

    # -- changes ---------------------------------------------------------------------------

    def on_change(self, callback: Callable[[Dict[str, Any]], Any]) -> Callable[[], None]:
        """Calls ``callback(change)`` with every change set (parsed) from now on; returns a
        function that removes it.

        Where it runs: on the thread that delivers the client's events, before the STORE
        event is queued for ``events()`` (so before the app can see it there, and before
        the RESPONSE of the action that caused it resolves its request). With ``on_event``
        that is the library's dispatcher thread, right before ``on_event`` gets the STORE
        event. In poll mode it is the binding's reader thread, or whichever of the app's
        threads is waiting in ``events()``, ``next_event()``, ``request()``,
        ``PendingRequest.wait()`` or a :class:`ChangeStream` at that moment; never two at
        once for one client, always in order. Keep it short, and never wait there for a
        reply or a change (it would wait for itself): reads and starting actions are fine.
        An exception it raises is logged and dropped. ``SystemExit`` (``sys.exit()``) and
        ``KeyboardInterrupt`` propagate out of the call that was taking events on an app
        thread (``events()``, ``request()``, ...) once the whole batch is delivered, so no
        event is lost; raised on the reader or dispatcher thread they are logged."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        hub = self._hub
        if hub.closed:
            raise _store_closed()
        with hub.lock:
            hub.callbacks.append(callback)

        def remove() -> None:
            with hub.lock:
                try:
                    hub.callbacks.remove(callback)
                except ValueError:
                    pass

        return remove

    def changes(self, timeout: Optional[float] = None) -> ChangeStream:
        """A :class:`ChangeStream` of the change sets delivered from now on (``for change
        in store.changes(): ...``). ``timeout`` (seconds) ends the iteration that long
        after this call, as ``Client.events(timeout)`` does. Close it (or use ``with``)
        when done; a stream nobody references stops collecting."""
        if self._hub.closed:
            raise _store_closed()
        deadline = None if timeout is None else time.monotonic() + timeout
        s = ChangeStream(self, deadline)
        if self._core.ended:
            s._ended = True
        return s

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- the asyncio store -------------------------------------------------------------------


class AsyncStoreRequest(AsyncReply):
    """A store action in flight on an :class:`tether.aio.AsyncClient`: sent when the method
    returned (so a refusal, e.g. ``InUseError``, raises there), awaited for its reply
    (``await store.paginate(room)``), which arrives after the store applied the answer.
    Cancelling the awaiting task cancels the request, as for ``AsyncClient.request``.
    ``id`` 0: nothing was sent, the result is ``None``."""

    __slots__ = ()

    def __init__(
        self,
        core: "_AsyncCore",
        rid: int,
        what: str,
        fut: "asyncio.Future[Event]",
        timeout: Optional[float] = None,
    ) -> None:
        # The library ends the action at the store's request timeout (the client's when the
        # store has none); the grace covers its answer's way here.
        limit = core.request_timeout if timeout is None else timeout
        super().__init__(core, rid, what, fut, core.loop.time() + limit + REQUEST_GRACE_S)

    def _forget(self) -> None:
        self._core.pending.pop(self.id, None)


class AsyncChangeStream(_Stream):
    """Change sets of an :class:`AsyncStore` (from :meth:`AsyncStore.changes`): ``async
    for change in stream``; collects from its creation, ends after the client's CLOSED, the
    stream's or the store's close, or its ``timeout``. Bounded as :class:`ChangeStream`
    (:attr:`missed`)."""

    def __init__(self, store: "AsyncStore", deadline: Optional[float]) -> None:
        super().__init__(store._hub, deadline)
        self._core: "_AsyncCore" = store._core  # type: ignore[assignment]
        self._wake = asyncio.Event()
        self._ended = self._core.closed
        self._hub.add_stream(self)

    def _pushed(self) -> None:  # the loop thread (the client's delivery)
        self._wake.set()

    def _end(self) -> None:
        self._ended = True
        self._wake.set()

    async def get(self, timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        """The next change set, waiting up to ``timeout`` seconds; ``None`` on timeout or
        once the stream ended."""
        core = self._core
        loop = core.loop
        deadline = None if timeout is None else loop.time() + timeout
        if self._deadline is not None:
            deadline = self._deadline if deadline is None else min(deadline, self._deadline)
        while not self._items:
            if self._ended or core.closed_flag.is_set() or not core.handle.live:
                return None
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return None
            self._wake.clear()
            waiters = [asyncio.ensure_future(self._wake.wait()),
                       asyncio.ensure_future(core.closed_flag.wait())]
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()
        return self._items.popleft().data

    def __aiter__(self) -> "AsyncChangeStream":
        return self

    async def __anext__(self) -> Dict[str, Any]:
        change = await self.get()
        if change is None:
            raise StopAsyncIteration
        return change

    def close(self) -> None:
        """Stops collecting (idempotent); what was collected can still be read."""
        self._hub.remove_stream(self)
        self._end()

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> "AsyncChangeStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncStore(_StoreBase):
    """The store of a :class:`tether.aio.AsyncClient` created with ``store=True``
    (``client.store``). Reads are plain (synchronous, fast) calls; actions send at once
    and return an :class:`AsyncStoreRequest` to await. Call them on the client's loop."""

    _core: "_AsyncCore"

    @staticmethod
    def _fits(core: CoreBase) -> bool:
        from .aio import _AsyncCore

        return isinstance(core, _AsyncCore)

    @staticmethod
    def _client_kind() -> str:
        return "tether.aio.AsyncClient (tether.Client has Store)"

    def _request(self, what: str, rid: int) -> AsyncStoreRequest:
        core = self._core
        fut: "asyncio.Future[Event]" = core.loop.create_future()
        if rid == 0:
            fut.set_result(Event(EventKind.RESPONSE, 0, Status.OK, "", b""))
        elif core.closed or (core.fatal is not None and not core.watching):
            fut.set_result(Event(EventKind.RESPONSE, rid, Status.ERR_CLIENT_CLOSED, "", b""))
        else:
            # The loop thread, no await since the native call: nothing delivered in between.
            core.pending[rid] = fut
        return AsyncStoreRequest(core, rid, what, fut, self._request_timeout)

    def paginate(self, room_id: str, limit: int = 0) -> AsyncStoreRequest:
        """As :meth:`Store.paginate`; ``await`` the result."""
        return self._request("paginate", self._paginate(room_id, limit))

    def load_state(self, room_id: str, members: bool = False) -> AsyncStoreRequest:
        """As :meth:`Store.load_state`; ``await`` the result."""
        return self._request("load_state", self._load_state(room_id, members))

    def send_message(self, room_id: str, text: str, **extra: Any) -> AsyncStoreRequest:
        """As :meth:`Store.send_message`; ``await`` the result."""
        return self._request("send_message", self._send_message(room_id, text, extra))

    def resend(self, room_id: str, rowid: int) -> AsyncStoreRequest:
        """As :meth:`Store.resend`; ``await`` the result."""
        return self._request("resend", self._resend(room_id, rowid))

    def mark_read(self, room_id: str, receipt_type: Optional[str] = None) -> AsyncStoreRequest:
        """As :meth:`Store.mark_read`; ``await`` the result."""
        return self._request("mark_read", self._mark_read(room_id, receipt_type))

    def request_members(self, room_id: str, user_ids: Iterable[str]) -> AsyncStoreRequest:
        """As :meth:`Store.request_members`; ``await`` the result (``None`` at once when
        nothing is missing)."""
        return self._request("request_members", self._request_members(room_id, user_ids))

    def on_change(self, callback: Callable[[Dict[str, Any]], Any]) -> Callable[[], None]:
        """Calls ``callback(change)`` on the loop thread for every change set, before the
        STORE event is queued for the client's iteration; returns a function that removes
        it. It must not block; an exception it raises is logged and dropped, except
        ``SystemExit`` and ``KeyboardInterrupt``, which stop the loop (as from any of its
        callbacks) once the batch being delivered is queued."""
        return Store.on_change(self, callback)  # type: ignore[arg-type]

    def changes(self, timeout: Optional[float] = None) -> AsyncChangeStream:
        """An :class:`AsyncChangeStream` of the change sets delivered from now on: ``async
        for change in store.changes(): ...``; ``timeout`` (seconds) ends the iteration that
        long after this call."""
        if self._hub.closed:
            raise _store_closed()
        loop = self._core.loop
        deadline = None if timeout is None else loop.time() + timeout
        return AsyncChangeStream(self, deadline)

    async def __aenter__(self) -> "AsyncStore":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.close()

