"""A client's connection state and statistics, read from the library without taking an
event: :class:`ConnectionState` and :class:`Stats`."""

from __future__ import annotations

import dataclasses
import enum
from ctypes import byref, c_uint32, sizeof
from typing import Any, Dict, Optional

from . import _ffi

__all__ = ["ConnectionState", "Stats"]


class ConnectionState(enum.IntEnum):
    """Where a client's connection is (``TETHER_STATE_*``)."""

    #: Created; not connecting yet.
    IDLE = 0
    #: A connection attempt runs (TCP, TLS, upgrade, handshake).
    CONNECTING = 1
    #: Connected.
    CONNECTED = 2
    #: Between attempts, waiting out the backoff delay.
    WAITING = 3
    #: Closed for good (by the app, or the server refused the client for good).
    CLOSED = 4
    #: Paused by the app (:meth:`Client.pause`): no connection, no attempt until unpaused.
    PAUSED = 5


def _state(value: int) -> ConnectionState:
    try:
        return ConnectionState(value)
    except ValueError:  # a state a newer library added: the nearest one this binding knows
        return ConnectionState.CONNECTING


@dataclasses.dataclass(frozen=True)
class Stats:
    """A snapshot of a client's statistics (``tether_client_stats``). Counters count from the
    client's creation, over every connection it made."""

    #: The connection state when the snapshot was taken.
    state: ConnectionState
    #: Connection attempts started.
    connect_attempts: int
    #: Attempts that ended connected (rwws: authenticated).
    connections: int
    #: gomuks: connections that asked to resume and got every missed event.
    resumes_succeeded: int
    #: gomuks: connections that asked to resume and got a fresh state (or a catchup) instead.
    resumes_reset: int
    #: Bytes read from the network by the websocket's connections (a proxy's handshake, TLS,
    #: the upgrade and the framing included; the gomuks login request is not counted).
    wire_bytes_in: int
    #: Bytes written to the network by the websocket's connections (a proxy's handshake, TLS,
    #: the upgrade and the framing included; the gomuks login request is not counted).
    wire_bytes_out: int
    #: Bytes of the received messages after decompression (compression saved
    #: ``1 - wire_bytes_in / payload_bytes_in``).
    payload_bytes_in: int
    #: Websocket data messages received (0 in-process, as the byte counts: only
    #: ``events_received`` counts the backend's events).
    messages_received: int
    #: Server events received (gomuks: not replies or pongs; rwws: packets).
    events_received: int
    #: Requests written to a connection (in-process: handed to the backend).
    requests_sent: int
    #: Requests without an outcome yet.
    requests_in_flight: int
    #: Requests that ended with :class:`~tether.RequestTimeoutError`.
    requests_timed_out: int
    #: Events received but not taken by the app yet: the library's queue plus the events
    #: this binding moved out of it and holds for ``next_event``.
    queued_events: int
    #: Round-trip time of the last ping answered with a measured round trip (see
    #: ``Event.rtt_us``), in seconds; ``None`` before the first.
    last_rtt: Optional[float]
    #: How long the current connection has been up, in seconds; ``None`` while not connected.
    connected_for: Optional[float]
    #: Bytes of requests and packets waiting to be written (made while disconnected, or
    #: faster than the uplink carries); a call that would pass ``max_unsent_bytes`` raises
    #: :class:`~tether.SendBufferFullError`.
    unsent_bytes: int


def read_state(ptr: int) -> ConnectionState:
    """``tether_client_state`` of a live client pointer."""
    out = c_uint32()
    _ffi.check(_ffi.lib.tether_client_state(ptr, byref(out)), "state")
    return _state(out.value)


def read_stats(ptr: int, queued_here: int = 0) -> Stats:
    """``tether_client_stats`` of a live client pointer; ``queued_here`` is added to
    ``queued_events`` (events the binding holds in its own queue)."""
    raw = _ffi.StatsStruct()
    raw.size = sizeof(raw)
    _ffi.check(_ffi.lib.tether_client_stats(ptr, byref(raw)), "stats")
    # An older library fills a prefix (raw.size says how much): the rest keeps its zeroes,
    # and the durations their "none" value.
    filled = raw.size
    rtt = raw.last_rtt_us if filled >= _end("last_rtt_us") else -1
    up = raw.connected_ms if filled >= _end("connected_ms") else -1
    return Stats(
        state=_state(raw.state),
        connect_attempts=raw.connect_attempts,
        connections=raw.connections,
        resumes_succeeded=raw.resumes_succeeded,
        resumes_reset=raw.resumes_reset,
        wire_bytes_in=raw.wire_bytes_in,
        wire_bytes_out=raw.wire_bytes_out,
        payload_bytes_in=raw.payload_bytes_in,
        messages_received=raw.messages_received,
        events_received=raw.events_received,
        requests_sent=raw.requests_sent,
        requests_in_flight=raw.requests_in_flight,
        requests_timed_out=raw.requests_timed_out,
        queued_events=raw.queued_events + queued_here,
        last_rtt=None if rtt < 0 else rtt / 1e6,
        connected_for=None if up < 0 else up / 1e3,
        unsent_bytes=raw.unsent_bytes if filled >= _end("unsent_bytes") else 0,
    )


def _end(field: str) -> int:
    f = getattr(_ffi.StatsStruct, field)
    return int(f.offset + f.size)


def closed_copy(stats: Stats) -> Stats:
    """``stats`` of a client that is gone: CLOSED, nothing in flight or connected."""
    return dataclasses.replace(
        stats,
        state=ConnectionState.CLOSED,
        requests_in_flight=0,
        connected_for=None,
        unsent_bytes=0,
    )


def empty_stats() -> Stats:
    """The stats of a closed client that counted nothing."""
    zeros: Dict[str, Any] = {f.name: 0 for f in dataclasses.fields(Stats)}
    zeros.update(state=ConnectionState.CLOSED, last_rtt=None, connected_for=None)
    return Stats(**zeros)
