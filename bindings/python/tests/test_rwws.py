"""The rwws dialect through the binding: handshake, pongs with the server clock, raw
packets and settings, and the close codes (3001-3005) with their retry policy."""

from __future__ import annotations

import asyncio
from typing import Any, List

import pytest

import tether
from tether import Client, EventKind, Status
from tether.aio import AsyncClient

from conftest import RWWS_KEY, SLOW, Backend, wait_event

PLAUSIBLE_MS = 1_600_000_000_000  # 2020: a big-endian unix time in ms, not garbage


def rwws(backend: Backend, token: str = RWWS_KEY) -> Client:
    return Client(backend.url, protocol="rwws", token=token, reconnect_backoff=(0.02, 0.2))


def test_handshake_and_pong_with_server_time(backend: Backend) -> None:
    with rwws(backend) as c:
        seen: List[Any] = []
        pong = wait_event(c, lambda e: e.kind == EventKind.PONG and e.rtt_us is not None, seen=seen)
        assert [e.kind for e in seen[:2]] == [EventKind.CONNECTING, EventKind.CONNECTED]
        assert pong.server_time_ms > PLAUSIBLE_MS and pong.rtt_us >= 0
        with pytest.raises(tether.StateError, match="rwws"):
            c.request("echo", {})
    stats = backend.wait_stats(lambda s: 1000 in s["closes_received"], rwws=True)
    assert stats["authenticated"] >= 1


def test_packets_and_settings(backend: Backend) -> None:
    with rwws(backend) as c:
        c.wait_connected(10 * SLOW)
        c.send_packet(b"\x42\x01\x02")
        c.send_settings([(1, b"\x05\x06"), (7, b"")])
        # Settings: packet 01, then id + value pairs, then ff (the spec's encoding).
        backend.wait_stats(
            lambda s: "420102" in s["unknown"] and "0101050607ff" in s["settings"], rwws=True
        )
        with pytest.raises(tether.InvalidArgumentError):
            c.send_packet(b"")
        with pytest.raises(tether.InvalidArgumentError):
            c.send_settings([(0xFF, b"")])  # the list terminator is not a setting id
        for not_a_byte in (0x101, -1):  # ctypes would have sent 0x101 as setting 1
            with pytest.raises(tether.InvalidArgumentError, match="not a byte"):
                c.send_settings([(not_a_byte, b"")])
        backend.control("/_testkit/rwws/fault?kind=unknown_packet")
        p = wait_event(c, lambda e: e.kind == EventKind.PACKET)
        assert p.raw[:1] == b"\x7f" and p.data is None


def test_gomuks_clients_have_no_packets(backend: Backend) -> None:
    with Client(backend.url, username="tether", password="tether-password") as c:
        with pytest.raises(tether.StateError):
            c.send_packet(b"\x00")
        with pytest.raises(tether.StateError):
            c.send_settings([(1, b"")])


def test_a_rejected_key_stops_with_3001(backend: Backend) -> None:
    c = rwws(backend, token="d3Jvbmc=")
    try:
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.CLOSED, seen=seen)
        d = [e for e in seen if e.kind == EventKind.DISCONNECTED][-1]
        assert (d.status, d.close_code, d.retry_in_ms) == (Status.ERR_UNAUTHORIZED, 3001, None)
        assert isinstance(c.fatal, tether.UnauthorizedError)
    finally:
        c.close()


@pytest.mark.parametrize("code", [3003, 3005])
def test_retryable_close_codes_reconnect(backend: Backend, code: int) -> None:
    with rwws(backend) as c:
        c.wait_connected(10 * SLOW)
        backend.control(f"/_testkit/rwws/close?code={code}&reason=again")
        d = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        assert d.close_code == code and d.status == Status.ERR_REMOTE_CLOSED
        assert d.reason == "again" and d.retry_in_ms is not None
        if code == 3003:
            assert d.retry_in_ms == 0  # the ping deadline: reconnect at once
        wait_event(c, lambda e: e.kind == EventKind.CONNECTED and e.attempt == 2)


def test_a_revoked_key_stops_with_3004(make_backend: Any) -> None:
    b = make_backend()
    with rwws(b) as c:
        c.wait_connected(10 * SLOW)
        b.control("/_testkit/rwws/revoke")
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.CLOSED, seen=seen)
        d = [e for e in seen if e.kind == EventKind.DISCONNECTED][-1]
        assert (d.status, d.close_code, d.retry_in_ms) == (Status.ERR_KEY_REVOKED, 3004, None)
        assert isinstance(c.fatal, tether.KeyRevokedError)


def test_a_version_mismatch_close_stops(backend: Backend) -> None:
    with rwws(backend) as c:
        c.wait_connected(10 * SLOW)
        backend.control("/_testkit/rwws/close?code=3002&reason=old")
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.CLOSED, seen=seen)
        d = [e for e in seen if e.kind == EventKind.DISCONNECTED][-1]
        assert (d.status, d.close_code, d.retry_in_ms) == (Status.ERR_VERSION_MISMATCH, 3002, None)
        assert isinstance(d.error, tether.VersionMismatchError)


def test_async_rwws_handshake(backend: Backend) -> None:
    async def main() -> None:
        async with AsyncClient(backend.url, protocol="rwws", token=RWWS_KEY) as c:
            async for ev in c.events(timeout=10 * SLOW):
                if ev.kind == EventKind.PONG and ev.rtt_us is not None:
                    assert ev.server_time_ms > PLAUSIBLE_MS
                    break
            else:
                pytest.fail("no pong")
            c.send_packet(b"\x43")
            with pytest.raises(tether.StateError):
                await c.request("echo")
        backend.wait_stats(lambda s: "43" in s["unknown"], rwws=True)

    asyncio.run(asyncio.wait_for(main(), 30 * SLOW))


def test_a_close_hands_back_the_packets_never_written(backend: Backend) -> None:
    """rwws-binary.md §2.8: packets waiting while paused come back as UNSENT on close, in
    the order sent, before CLOSED."""
    c = rwws(backend)
    try:
        c.wait_connected(10 * SLOW)
        c.pause()
        wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        c.send_packet(b"\x42\x01")
        c.send_settings([(5, b"\x07")])
        c.close()
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.CLOSED, seen=seen)
        unsent = [e for e in seen if e.kind == EventKind.UNSENT]
        assert [e.raw for e in unsent] == [b"\x42\x01", b"\x01\x05\x07\xff"]
        assert all(e.status == Status.ERR_CLIENT_CLOSED for e in unsent)
    finally:
        c.close()
