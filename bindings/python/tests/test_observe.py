"""Observability against a real backend: the library's log records in :mod:`logging`
(levels, logger names, client ids, no secret ever), ``Client.stats()``/``state``/``id`` on
both clients, and ``wait_connected`` raising the reason a client ended for good."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import socket
import time
from typing import List

import pytest

import tether
from tether import Client, ConnectionState, EventKind, Stats
from tether._log import LEVELS, TRACE, logger_name
from tether.aio import AsyncClient

from conftest import (
    PASSWORD,
    RWWS_KEY,
    SLOW,
    USER,
    Backend,
    await_event,
    gomuks_opts,
    run_python,
    wait_event,
    wait_until,
)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every tether record, TRACE included."""
    caplog.set_level(TRACE, logger="tether")
    return caplog


def mine(caplog: pytest.LogCaptureFixture, client_id: int) -> List[logging.LogRecord]:
    return [r for r in list(caplog.records) if getattr(r, "tether_client", None) == client_id]


def wait_log(caplog: pytest.LogCaptureFixture, client_id: int, text: str,
             timeout: float = 10.0) -> List[logging.LogRecord]:
    """The client's records once one contains ``text`` (they arrive on the tether-log
    thread, a little after the events)."""
    deadline = time.monotonic() + timeout * SLOW
    while True:
        recs = mine(caplog, client_id)
        if any(text in r.getMessage() for r in recs):
            return recs
        if time.monotonic() > deadline:
            pytest.fail(f"no record with {text!r}; got: {[r.getMessage() for r in recs]}")
        time.sleep(0.01)


def record(recs: List[logging.LogRecord], text: str) -> logging.LogRecord:
    found = [r for r in recs if text in r.getMessage()]
    assert found, f"no record with {text!r}: {[r.getMessage() for r in recs]}"
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- logging --------------------------------------------------------------------------------


def test_levels_and_logger_names() -> None:
    assert LEVELS == {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO,
                      4: logging.DEBUG, 5: 5}
    assert logging.getLevelName(TRACE) == "TRACE"
    assert logger_name("tether::session") == "tether.session"
    assert logger_name("tether::dialect::gomuks") == "tether.dialect.gomuks"
    assert logger_name("tether") == "tether"
    assert logger_name("hyper::proto") == "tether.hyper.proto"


def test_the_bindings_own_records_name_no_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether")
    logging.getLogger("tether").info("from the binding itself")
    assert [getattr(r, "tether_client", None) for r in caplog.records] == [0]


def test_a_wrong_password_is_logged_and_raised_by_wait_connected(
    backend: Backend, logs: pytest.LogCaptureFixture
) -> None:
    c = Client(backend.url, username=USER, password="wrong")
    try:
        with pytest.raises(tether.UnauthorizedError):
            c.wait_connected(10 * SLOW)
        with pytest.raises(tether.UnauthorizedError):  # again: the reason stays
            c.wait_connected(0)
        recs = wait_log(logs, c.id, "connection ended for good")
        auth = record(recs, "POST /_gomuks/auth to log in")
        assert "failed" in auth.getMessage() and "401" in auth.getMessage()
        assert auth.levelno == logging.WARNING and auth.levelname == "WARNING"
        assert record(recs, "connection ended for good").levelno == logging.ERROR
        assert all(r.name.startswith("tether.") and "::" not in r.name for r in recs)
        assert not any("wrong" in r.getMessage() for r in recs)
        # Each record carries the library's time of writing, not the log thread's.
        assert all(abs(r.created - time.time()) < 60 for r in recs)
        assert [r.created for r in recs] == sorted(r.created for r in recs)
        # Nothing else could ever connect it, and the events still tell the story.
        assert c.state == ConnectionState.CLOSED
        kinds = [e.kind for e in c.events(timeout=5 * SLOW)]
        assert kinds[-2:] == [EventKind.DISCONNECTED, EventKind.CLOSED]
    finally:
        c.close()


def test_a_refused_port_logs_each_attempt_and_the_backoff(
    logs: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    c = Client(f"http://127.0.0.1:{port}", reconnect_backoff=(0.05, 0.05))
    try:
        recs = wait_log(logs, c.id, "attempt 2 failed")
        first = record(recs, "attempt 1 failed")
        assert first.levelno == logging.WARNING and f"127.0.0.1:{port}" in first.getMessage()
        assert record(recs, "reconnecting in").levelno in (logging.INFO, logging.WARNING)
        assert f"127.0.0.1:{port}/_gomuks/websocket" in record(recs, "connecting to").getMessage()
        assert c.state in (ConnectionState.CONNECTING, ConnectionState.WAITING)
        s = c.stats()
        assert s.connect_attempts >= 2 and s.connections == 0
        assert s.connected_for is None and s.last_rtt is None
        with pytest.raises(TimeoutError):
            c.wait_connected(0.05)
    finally:
        c.close()
    assert c.state == ConnectionState.CLOSED


def test_a_cut_and_its_resume_are_logged_and_counted(
    backend: Backend, logs: pytest.LogCaptureFixture
) -> None:
    with Client(backend.url, **gomuks_opts()) as c:
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
        newest = backend.push(3)  # a received event id is what a resume asks from
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == newest)
        backend.cut()
        wait_event(c, lambda e: e.kind == EventKind.CONNECTED and e.resume_attempted)
        recs = wait_log(logs, c.id, "resume succeeded")
        assert record(recs, "reconnecting in").levelno == logging.INFO
        assert record(recs, "asking to resume").levelno == logging.INFO
        assert record(recs, "resume succeeded").levelno == logging.INFO
        s = c.stats()
        assert (s.connections, s.resumes_succeeded, s.resumes_reset) == (2, 1, 0)
        assert s.state == ConnectionState.CONNECTED == c.state


def test_no_secret_reaches_any_record(backend: Backend, logs: pytest.LogCaptureFixture) -> None:
    ids = []
    # A password login (POST /_gomuks/auth), then a connection with the token it got.
    with Client(backend.url, **gomuks_opts()) as c:
        c.wait_connected(10 * SLOW)
        c.request("echo", {"x": 1})
        token = c.auth_token()
        ids.append(c.id)
    assert token
    with Client(backend.url, token=token, ping_interval=0.05) as c:
        wait_event(c, lambda e: e.kind == EventKind.PONG)
        ids.append(c.id)
    # rwws with its key.
    with Client(backend.url, protocol="rwws", token=RWWS_KEY) as c:
        wait_event(c, lambda e: e.kind == EventKind.PONG and e.rtt_us is not None)
        ids.append(c.id)
    for cid in ids:
        wait_log(logs, cid, "closed")  # the log thread delivered up to the close
    text = "\n".join(
        f"{r.levelname} {r.name} {getattr(r, 'tether_client', '')} {r.getMessage()}"
        for r in logs.records
    )
    assert "POST /_gomuks/auth to log in" in text and "connected in" in text, text
    key = base64.b64decode(RWWS_KEY)
    secrets = [
        PASSWORD,
        token[:24],
        RWWS_KEY,
        key.decode(),
        key.hex(),
        ", ".join(str(b) for b in key),
        base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    ]
    for secret in secrets:
        assert secret not in text, f"secret {secret!r} in the log records"


def test_a_failing_handler_costs_nothing_but_its_record(
    backend: Backend, logs: pytest.LogCaptureFixture
) -> None:
    class Exploding(logging.Handler):
        def handle(self, record: logging.LogRecord) -> bool:
            if "connecting to" in record.getMessage():
                raise RuntimeError("a broken handler")
            return True

    bad = Exploding()
    tether_logger = logging.getLogger("tether")
    tether_logger.addHandler(bad)
    try:
        with Client(backend.url, **gomuks_opts()) as c:
            c.wait_connected(10 * SLOW)
            assert c.request("echo", {"ok": 1}) == {"ok": 1}
            wait_log(logs, c.id, "connected in")  # later records still flow
    finally:
        tether_logger.removeHandler(bad)


BASIC_CONFIG = """
import logging, sys, time
import tether
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s [%(tether_client)s] %(message)s")
c = tether.Client(sys.argv[1] if len(sys.argv) > 1 else __import__("os").environ["URL"],
                  username="tether", password="wrong")
try:
    c.wait_connected(10)
except tether.UnauthorizedError as e:
    print("RAISED", type(e).__name__, flush=True)
# Exit with a second client still retrying a refused port, its records still coming: the
# callback is removed before the interpreter finalizes.
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
d = tether.Client(f"http://127.0.0.1:{port}", reconnect_backoff=(0.001, 0.001))
time.sleep(0.3)
print("ID", c.id, flush=True)
"""


def test_basic_config_shows_the_records_and_exit_is_clean(backend: Backend) -> None:
    for _ in range(3):
        r = run_python(BASIC_CONFIG, URL=backend.url)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "RAISED UnauthorizedError" in r.stdout, r.stdout + r.stderr
        cid = r.stdout.split("ID ")[1].split()[0]
        assert "WARNING tether." in r.stderr and f"[{cid}] POST /_gomuks/auth" in r.stderr, r.stderr
        assert "attempt 1 failed" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "Fatal" not in r.stderr, r.stderr


LATE_CLIENT = """
import atexit, logging, socket, sys, time
def late():
    # Runs after tether's own exit handler (registered later, run earlier): the callback is
    # gone and must stay gone, this close to finalization.
    print("LATE", flush=True)
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    c = tether.Client(f"http://127.0.0.1:{port}", reconnect_backoff=(0.001, 0.001))
    time.sleep(0.2)
    c.close(1)
atexit.register(late)
import tether
logging.basicConfig(level=logging.DEBUG, format="%(name)s %(message)s")
c = tether.Client(sys.argv[1] if len(sys.argv) > 1 else __import__("os").environ["URL"],
                  username="tether", password="tether-password")
c.wait_connected(10)
"""


def test_a_client_created_after_tethers_exit_handler_logs_nothing(backend: Backend) -> None:
    r = run_python(LATE_CLIENT, URL=backend.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "LATE" in r.stdout and "connected in" in r.stderr, r.stdout + r.stderr
    assert "attempt 1 failed" not in r.stderr, r.stderr
    assert "Fatal" not in r.stderr and "Traceback" not in r.stderr, r.stderr


# -- state and stats ------------------------------------------------------------------------


def test_stats_after_events_and_a_request_are_consistent(backend: Backend) -> None:
    with Client(backend.url, **gomuks_opts(compress=True)) as c:
        assert isinstance(c.id, int) and c.id > 0
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
        newest = backend.push(50)
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == newest)
        assert c.request("echo", {"pad": "x" * 2000}) == {"pad": "x" * 2000}
        s = c.stats()
        assert isinstance(s, Stats) and s.state == ConnectionState.CONNECTED
        assert (s.connect_attempts, s.connections) == (1, 1)
        assert (s.requests_sent, s.requests_in_flight, s.requests_timed_out) == (1, 0, 0)
        # Not one message per event: the backend batches events, and pongs are messages.
        assert s.events_received >= 50 and s.messages_received > 0
        assert 0 < s.wire_bytes_in < s.payload_bytes_in, s  # compressed on the wire
        assert s.wire_bytes_out > 0
        assert s.connected_for is not None and 0 <= s.connected_for < 60
        assert s.resumes_succeeded == s.resumes_reset == 0
        with pytest.raises(dataclasses.FrozenInstanceError):
            s.connections = 7  # type: ignore[misc]
    after = c.stats()
    assert after.state == ConnectionState.CLOSED and after.connected_for is None
    assert after.requests_sent == 1 and after.events_received >= s.events_received


def test_state_follows_the_connection_without_taking_events(backend: Backend) -> None:
    c = Client(backend.url, **gomuks_opts())
    try:
        first = c.state
        assert first in (ConnectionState.IDLE, ConnectionState.CONNECTING,
                         ConnectionState.CONNECTED), first
        wait_until(lambda: c.state == ConnectionState.CONNECTED, "CONNECTED")
        assert c.stats().state == ConnectionState.CONNECTED
        # Reading the state took no event: they are all still there, in order.
        assert [c.next_event(5 * SLOW).kind for _ in range(2)] == [  # type: ignore[union-attr]
            EventKind.CONNECTING, EventKind.CONNECTED]
    finally:
        c.close()
    assert c.state == ConnectionState.CLOSED
    assert c.stats().state == ConnectionState.CLOSED


def test_the_async_client_shares_state_stats_and_wait_connected(backend: Backend) -> None:
    async def main() -> None:
        async with AsyncClient(backend.url, **gomuks_opts()) as c:
            assert c.id > 0
            wait_until(lambda: c.state != ConnectionState.IDLE, "leaving IDLE")
            await c.wait_connected(10 * SLOW)
            assert c.state == ConnectionState.CONNECTED
            await await_event(c, lambda e: e.kind == EventKind.MESSAGE
                              and e.command == "init_complete")
            assert await c.request("echo", {"a": 1}) == {"a": 1}
            s = c.stats()
            assert (s.connections, s.requests_sent, s.requests_in_flight) == (1, 1, 0)
            assert s.events_received > 0 and s.messages_received > 0
        assert c.state == ConnectionState.CLOSED and c.stats().state == ConnectionState.CLOSED

        bad = AsyncClient(backend.url, username=USER, password="wrong")
        try:
            with pytest.raises(tether.UnauthorizedError):
                await bad.wait_connected(10 * SLOW)
            assert isinstance(bad.fatal, tether.UnauthorizedError)
        finally:
            await bad.close()

        plain = AsyncClient(backend.url, **gomuks_opts())
        await plain.close()
        with pytest.raises(tether.ClientClosedError):
            await plain.wait_connected(1)

    asyncio.run(main())


def test_a_plain_close_still_raises_client_closed(backend: Backend) -> None:
    c = Client(backend.url, **gomuks_opts())
    c.close()
    with pytest.raises(tether.ClientClosedError):
        c.wait_connected(1)
    assert c.fatal is None


def test_queued_events_include_the_ones_the_binding_holds(backend: Backend) -> None:
    with Client(backend.url, **gomuks_opts()) as c:
        c.wait_connected(10 * SLOW)
        newest = backend.push(30)
        wait_until(lambda: c.stats().events_received >= 30, "30 events received")
        wait_until(lambda: c.stats().queued_events >= 30, "30 events queued")
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == newest)
        assert c.stats().queued_events < 30
