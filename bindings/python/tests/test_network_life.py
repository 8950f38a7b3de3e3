"""A phone's network life through the Python binding: pause and unpause in place, the
reconnect cue, and the pong deadline option (docs/protocol/gomuks-rpc.md §7 resume, §8
keepalive)."""

import time

import pytest

import tether
from tether import Client, ConnectionState, EventKind

from conftest import Backend, gomuks_opts, wait_event


def test_pause_and_unpause_resume_with_every_missed_event_once(backend: Backend) -> None:
    with Client(backend.url, **gomuks_opts(pong_timeout=5)) as c:
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
        before = backend.push(2)
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == before)
        c.pause()
        d = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        assert d.retry_in_ms is None and d.close_code == 1000
        assert c.state == ConnectionState.PAUSED and c.fatal is None
        opened = backend.stats()["total_connections"]
        missed = backend.push(4)
        time.sleep(0.3)
        assert c.state == ConnectionState.PAUSED
        assert backend.stats()["total_connections"] == opened, "nothing reconnects while paused"
        c.unpause()
        conn = wait_event(c, lambda e: e.kind == EventKind.CONNECTED)
        assert conn.resume_attempted
        seen: list = []
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == missed, seen=seen)
        ids = [e.id for e in seen if e.kind == EventKind.MESSAGE and e.id < 0]
        assert ids == list(range(before - 1, missed - 1, -1))
        assert c.request("echo", {"ok": 1}) == {"ok": 1}


def test_reconnect_cue_while_connected_keeps_a_live_link(backend: Backend) -> None:
    with Client(backend.url, **gomuks_opts()) as c:
        c.wait_connected(10)
        opened = backend.stats()["total_connections"]
        c.reconnect_now()
        c.reconnect_now()
        time.sleep(0.5)
        assert c.state == ConnectionState.CONNECTED
        stats = backend.stats()
        # The probe was answered: still the one connection, none opened since.
        assert (stats["connections"], stats["total_connections"]) == (1, opened)


def test_pause_after_close_is_a_state_error(backend: Backend) -> None:
    # The same class whether the client is freed yet or not (close() frees it here).
    c = Client(backend.url, **gomuks_opts())
    c.close()
    for call in (c.pause, c.unpause, c.reconnect_now, lambda: c.send_packet(b"x"),
                 lambda: c.send_settings([(1, b"")])):
        with pytest.raises(tether.StateError):
            call()
    with pytest.raises(tether.InvalidArgumentError):
        Client(backend.url, **gomuks_opts(pong_timeout=0))


def test_requests_while_paused_stop_at_the_send_budget(backend: Backend) -> None:
    # max_unsent_bytes: a request past the budget raises SendBufferFullError and takes
    # nothing; the accepted one goes out after unpausing and frees the budget, and one
    # SEND_READY tells the refused app to send again.
    with Client(backend.url, **gomuks_opts(max_unsent_bytes=4096)) as c:
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
        assert c.stats().unsent_bytes == 0
        c.pause()
        wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        body = {"x": "y" * 3000}
        first = c.submit("echo", body)
        held = c.stats().unsent_bytes
        assert 3000 < held < 4096
        with pytest.raises(tether.SendBufferFullError) as e:
            c.submit("echo", body)
        assert e.value.status == tether.Status.ERR_SEND_BUFFER_FULL
        assert isinstance(e.value, tether.UsageError)
        assert "max_unsent_bytes" in str(e.value)
        assert c.stats().unsent_bytes == held
        with pytest.raises(tether.SendBufferFullError):
            c.submit("echo", body)
        c.unpause()
        assert first.result(10) == body
        assert c.stats().unsent_bytes == 0
        wait_event(c, lambda e: e.kind == EventKind.SEND_READY)
        assert c.request("echo", body) == body
    with pytest.raises(tether.InvalidArgumentError):
        Client(backend.url, **gomuks_opts(max_unsent_bytes=-1))
    with pytest.raises(tether.ConfigError):
        Client(backend.url, **gomuks_opts(max_unsent_bytes=0))
