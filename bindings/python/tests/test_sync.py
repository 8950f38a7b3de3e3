"""The blocking Client against a real tether-backend."""

from __future__ import annotations

import gc
import json
import textwrap
import threading
import time
from typing import Any, Callable, List

import pytest

import tether
from tether import Client, EventKind, InvalidArgumentError, Status
from tether.events import _UNSET

from conftest import SLOW, Backend, foreign_env, gomuks_opts, run_python, wait_event, wait_until


def client(backend: Backend, **extra: Any) -> Client:
    return Client(backend.url, **gomuks_opts(**extra))


def init_complete(c: Client) -> None:
    wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")


def buffered_ids(c: Client, until: int, seen: List[Any], timeout: float = 10.0) -> List[int]:
    """Ids of buffered events (negative) received until ``until`` arrived."""
    ids: List[int] = []

    def pred(e: Any) -> bool:
        if e.kind == EventKind.MESSAGE and e.id < 0:
            ids.append(e.id)
        return e.kind == EventKind.MESSAGE and e.id == until

    wait_event(c, pred, timeout, seen)
    return ids


# -- requests ------------------------------------------------------------------------------


def test_request_returns_the_reply_data(backend: Backend) -> None:
    with client(backend) as c:
        payload = {"text": "héllo ✓", "n": [1, 2.5, None, True], "nested": {"a": {}}}
        assert c.request("echo", payload, timeout=10) == payload
        assert c.request("echo", b'{"raw":1}') == {"raw": 1}
        assert c.request("echo") == {}
        state = c.request("get_state")
        assert isinstance(state, dict)


def test_remote_errors_carry_the_servers_message(backend: Backend) -> None:
    with client(backend) as c:
        with pytest.raises(tether.RemoteError) as e:
            c.request("fail", {"message": "nope, not today"})
        assert e.value.message == "nope, not today"
        assert e.value.status == Status.ERR_REMOTE and e.value.request_id > 0
        with pytest.raises(tether.RemoteError):
            c.request("no_such_command", {})
        assert c.request("echo", {"still": "usable"}) == {"still": "usable"}


def test_bad_requests_are_refused_before_sending(backend: Backend) -> None:
    with client(backend) as c:
        with pytest.raises(tether.InvalidUtf8Error):
            c.request("echo", b"{not json")
        with pytest.raises(tether.InvalidArgumentError, match="NUL"):
            c.request("ec\0ho", {})
        with pytest.raises(tether.InvalidArgumentError):
            c.request("echo", {}, timeout=0)
        with pytest.raises(TypeError):
            c.request("echo", {"x": object()})


def test_a_request_timeout_raises_and_the_client_stays_usable(backend: Backend) -> None:
    with client(backend) as c:
        c.wait_connected(10 * SLOW)
        t0 = time.monotonic()
        with pytest.raises(tether.RequestTimeoutError) as e:
            c.request("sleep", {"ms": 3000}, timeout=0.3)
        assert e.value.status == Status.ERR_REQUEST_TIMEOUT
        assert time.monotonic() - t0 < 2.5 * SLOW
        assert c.request("echo", {"after": "timeout"}) == {"after": "timeout"}


def test_the_client_request_timeout_option_applies(backend: Backend) -> None:
    with client(backend, request_timeout=0.3) as c:
        with pytest.raises(tether.RequestTimeoutError):
            c.request("sleep", {"ms": 3000})


def _tinyproxy(tmp_path: Any, auth: str) -> Any:
    """tinyproxy with ``BasicAuth`` on a free loopback port, or a skip (a failure under CI)."""
    import os
    import shutil
    import socket
    import subprocess

    binary = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if os.path.exists("/usr/bin/tinyproxy") else None)
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tinyproxy is not installed (scripts/ensure-tools.sh installs it)")
        pytest.skip("tinyproxy is not installed (scripts/ensure-tools.sh installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "tinyproxy.conf"
    log = tmp_path / "tinyproxy.log"
    conf.write_text(
        f"Port {port}\nListen 127.0.0.1\nTimeout 60\nLogLevel Connect\n"
        f'LogFile "{log}"\nBasicAuth {auth}\n'
    )
    proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=foreign_env())
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("tinyproxy did not start")
            time.sleep(0.02)
    return proc, port, log


def test_the_client_proxy_option_applies(backend: Backend, tmp_path: Any) -> None:
    proc, port, log = _tinyproxy(tmp_path, "puser ppass")
    try:
        with client(backend, proxy=f"http://puser:ppass@127.0.0.1:{port}") as c:
            assert c.request("echo", {"via": "proxy"}) == {"via": "proxy"}
        text = log.read_text()
        # The login and the websocket both tunnel.
        assert text.count("CONNECT 127.0.0.1:") >= 2, text
        # A wrong proxy password: UnauthorizedError, no retry, the password never shown.
        with client(backend, proxy=f"http://puser:not-SECRET@127.0.0.1:{port}") as c:
            ev = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
            assert ev.status == Status.ERR_UNAUTHORIZED
            assert ev.retry_in_ms is None
            assert "not-SECRET" not in repr(ev) and "not-SECRET" not in str(ev.error)
        # A proxy URL tether cannot use is a configuration error that does not repeat it.
        with pytest.raises(tether.ConfigError) as e:
            client(backend, proxy="ftp://u:hunter2@127.0.0.1:1")
        assert "hunter2" not in str(e.value)
        with client(backend, proxy="direct") as c:
            assert c.request("echo", {}) == {}
    finally:
        proc.terminate()
        proc.wait(5)


def test_the_client_proxy_resolver_option_applies(backend: Backend, tmp_path: Any) -> None:
    proc, port, log = _tinyproxy(tmp_path, "puser ppass")
    asked: List[str] = []
    answer: List[Any] = [f"http://puser:ppass@127.0.0.1:{port}"]

    def resolve(url: str) -> Any:
        asked.append(url)
        if answer[0] == "raise":
            raise OSError("PAC script unreachable")
        return answer[0]

    try:
        # Asked before the login and before the websocket; its proxy wins over "direct".
        with client(backend, proxy="direct", proxy_resolver=resolve) as c:
            assert c.request("echo", {"via": "resolver"}) == {"via": "resolver"}
            assert asked[0].startswith("http://127.0.0.1:") and asked[0].endswith("/_gomuks/auth")
            assert asked[1].startswith("ws://127.0.0.1:")
            assert asked[1].endswith("/_gomuks/websocket")
        assert log.read_text().count("CONNECT 127.0.0.1:") >= 2
        # An exception fails that attempt only: ConnectError, retried.
        answer[0] = "raise"
        with client(backend, proxy_resolver=resolve) as c:
            ev = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
            assert ev.status == Status.ERR_CONNECT
            assert "proxy resolver failed" in str(ev.error)
            assert ev.retry_in_ms is not None
            answer[0] = None  # the configured decision: the environment, here direct
            c.wait_connected(10 * SLOW)
        # An answer that is no proxy, or no str, ends the client; it is never repeated.
        for bad in ("ftp://u:hunter2@127.0.0.1:1", b"http://u:hunter2@127.0.0.1:1"):
            answer[0] = bad
            with client(backend, proxy_resolver=resolve) as c:
                ev = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
                assert ev.status == Status.ERR_CONFIG
                assert ev.retry_in_ms is None
                assert "hunter2" not in repr(ev) and "hunter2" not in str(ev.error)
        with pytest.raises(TypeError):
            client(backend, proxy_resolver="http://not-callable")
    finally:
        proc.terminate()
        proc.wait(5)
    # Every resolver was let go once its client ended.
    gc.collect()
    assert not tether._options._resolvers


def test_system_proxy_answers_from_the_system_settings(monkeypatch: Any, caplog: Any) -> None:
    import os
    import urllib.request

    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    settings: dict = {}
    bypassed: List[str] = []

    def bypass(host: str) -> bool:
        bypassed.append(host)
        return host.startswith("intranet.corp:") or host.startswith("2001:")

    # What urllib's readings of the macOS settings or the Windows registry give (the shapes
    # of getproxies_macosx_sysconf and getproxies_registry); read at each call.
    monkeypatch.setattr(urllib.request, "getproxies", lambda: dict(settings))
    monkeypatch.setattr(urllib.request, "proxy_bypass", bypass)
    sp = tether.system_proxy
    assert sp("wss://example.org/_gomuks/websocket") is None  # no proxy set
    # macOS: both keys as http:// URLs.
    settings.update(http="http://p.corp:3128", https="http://s.corp:8080")
    assert sp("wss://example.org/_gomuks/websocket") == "http://s.corp:8080"
    assert sp("https://example.org:8443/_gomuks/auth") == "http://s.corp:8080"
    assert sp("ws://example.org:29325/_gomuks/websocket") == "http://p.corp:3128"
    # The bypass list is asked with the port, the scheme's default when the URL has none.
    assert sp("wss://intranet.corp/_gomuks/websocket") == "direct"
    assert bypassed[-1] == "intranet.corp:443"
    # An IPv6 literal is not matched (urllib's simple-host rule would take any of them).
    assert sp("wss://[2001:db8::1]:443/x") == "http://s.corp:8080"
    assert not any(h.startswith("2001:") for h in bypassed)
    # Loopback stays tether's own decision, never the settings'.
    for url in ("ws://127.0.0.1:9/x", "wss://[::1]:9/x", "ws://localhost:9/x", "ws://a.localhost/x"):
        assert sp(url) is None, url
    # Windows "socks=s.corp:1080": urllib copies it into http and https as socks4://.
    settings.clear()
    settings.update(socks="socks://s.corp:1080", http="socks4://s.corp:1080", https="socks4://s.corp:1080")
    assert sp("wss://example.org/x") == "socks5://s.corp:1080"
    # Windows "p.corp:3128" for every protocol, and an entry without a scheme.
    settings.clear()
    settings.update(http="http://p.corp:3128", https="http://p.corp:3128", ftp="http://p.corp:3128")
    assert sp("wss://example.org/x") == "http://p.corp:3128"
    settings["https"] = "p.corp:3129"
    assert sp("wss://example.org/x") == "http://p.corp:3129"
    # A kind tether cannot use: logged, and left to tether's own rules.
    settings["https"] = "ftp://f.corp:21"
    with caplog.at_level("WARNING", logger="tether"):
        assert sp("wss://example.org/x") is None
    assert "ftp://" in caplog.text
    # Any *_proxy variable, no_proxy alone too: urllib reads only the environment, and
    # tether's own rules decide (networks in no_proxy included).
    settings["https"] = "http://s.corp:8080"
    monkeypatch.setenv("no_proxy", "10.0.0.0/8")
    assert sp("wss://example.org/x") is None


def test_system_proxy_as_the_resolver_connects(backend: Backend) -> None:
    # Loopback: the resolver leaves it to tether, which connects directly.
    with client(backend, proxy_resolver=tether.system_proxy) as c:
        assert c.request("echo", {"via": "system"}) == {"via": "system"}


def test_an_interpreter_exiting_during_a_proxy_resolver_call_waits_for_it() -> None:
    # The client is freed at exit while its resolver runs Python code on a library thread;
    # freeing waits for that call, so it never takes the GIL during finalization.
    code = textwrap.dedent(
        """
        import threading, time, tether
        asked = threading.Event()
        def resolve(url):
            print("asked", flush=True)
            asked.set()
            t = time.monotonic()
            while time.monotonic() - t < 0.5:
                sum(range(1000))
            print("answered", flush=True)
            return "direct"
        c = tether.Client("ws://127.0.0.1:9/_gomuks/websocket", proxy_resolver=resolve)
        assert asked.wait(10), "the resolver was never called"
        print("exiting", flush=True)
        """
    )
    r = run_python(code, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["asked", "exiting", "answered"], (r.stdout, r.stderr)


def test_a_proxy_resolver_may_close_its_own_client(backend: Backend) -> None:
    # The library frees the client only once the resolver has returned, so close() from
    # inside it returns at once instead of waiting for that free (which waited for it).
    made = threading.Event()
    closed_in: List[float] = []
    holder: List[Client] = []

    def resolve(url: str) -> None:
        assert made.wait(10 * SLOW)
        t0 = time.monotonic()
        holder[0].close()
        closed_in.append(time.monotonic() - t0)
        return None

    c = client(backend, proxy_resolver=resolve)
    holder.append(c)
    made.set()
    # Freed by the library's side once CLOSED has passed and the resolver has returned.
    assert c._core.freed.wait(10 * SLOW)
    assert closed_in and closed_in[0] < 1.0 * SLOW, closed_in
    with pytest.raises(tether.ClientClosedError):
        c.request("echo", {})
    c.close()  # idempotent from outside too


def test_cancel_a_pending_request(backend: Backend) -> None:
    with client(backend) as c:
        c.wait_connected(10 * SLOW)
        p = c.submit("sleep", {"ms": 5000})
        assert not p.done()
        assert p.cancel()
        t0 = time.monotonic()
        with pytest.raises(tether.RequestCancelledError):
            p.result(5 * SLOW)
        assert time.monotonic() - t0 < 2 * SLOW
        assert not p.cancel()  # already answered
        with pytest.raises(tether.InvalidArgumentError):
            c.cancel(10**12)  # never issued
        assert c.request("echo", {"x": 1}) == {"x": 1}
    # Closed and freed: StateError, as pause and packets say, not ClientClosedError.
    with pytest.raises(tether.StateError):
        c.cancel(p.id)


def test_concurrent_requests_from_many_threads(backend: Backend) -> None:
    errors: List[BaseException] = []
    with client(backend) as c:

        def worker(n: int) -> None:
            try:
                for i in range(25):
                    assert c.request("echo", {"t": n, "i": i}) == {"t": n, "i": i}
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30 * SLOW)
        assert not any(t.is_alive() for t in threads)
    assert not errors, errors


def test_requests_made_before_the_connection_is_up_are_sent_once_connected(
    backend: Backend,
) -> None:
    with client(backend) as c:
        p = [c.submit("echo", {"i": i}) for i in range(5)]  # right after construction
        assert [x.result(10 * SLOW) for x in p] == [{"i": i} for i in range(5)]


# -- events --------------------------------------------------------------------------------


def test_events_arrive_in_order_with_lazily_parsed_data(backend: Backend) -> None:
    with client(backend) as c:
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete",
                   seen=seen)
        kinds = [e.kind for e in seen]
        assert kinds[:2] == [EventKind.CONNECTING, EventKind.CONNECTED]
        assert "run_id" in [e.command for e in seen]
        newest = backend.push(5)
        events = [wait_event(c, lambda e: e.kind == EventKind.MESSAGE) for _ in range(5)]
        assert [e.id for e in events] == list(range(newest + 4, newest - 1, -1))
        ev = events[0]
        assert ev.command == "sync_complete"
        assert ev._data is _UNSET  # not parsed until asked for
        assert isinstance(ev.raw, bytes) and ev.raw.startswith(b"{")
        assert isinstance(ev.data, dict) and ev._data is ev.data  # parsed once, then cached
        assert json.loads(ev.raw) == ev.data
        assert "sync_complete" in repr(ev)


def test_pongs_acknowledge_the_newest_event(backend: Backend) -> None:
    with client(backend, ping_interval=0.1) as c:
        init_complete(c)
        newest = backend.push(5)
        pong = wait_event(c, lambda e: e.kind == EventKind.PONG and e.acked_id == newest)
        assert pong.rtt_us is not None and pong.rtt_us >= 0
        backend.wait_stats(lambda s: s["last_ack"] == newest)


def test_resume_after_a_cut_delivers_every_event_exactly_once(backend: Backend) -> None:
    with client(backend) as c:
        init_complete(c)
        first = backend.push(10)
        seen: List[Any] = []
        before = buffered_ids(c, first - 0, seen)
        backend.cut()
        newest = backend.push(20)
        after = buffered_ids(c, newest, seen)
        ids = before + after
        assert ids == list(range(first + 9, newest - 1, -1)), ids
        resumed = [e for e in seen if e.kind == EventKind.CONNECTED and e.resume_attempted]
        assert len(resumed) == 1
        disconnected = [e for e in seen if e.kind == EventKind.DISCONNECTED]
        assert len(disconnected) == 1 and disconnected[0].retry_in_ms is not None
        assert c.resume_state().last_event_id == newest


def test_resume_state_passed_to_a_new_client(backend: Backend) -> None:
    with client(backend) as a:
        init_complete(a)
        first = backend.push(3)
        buffered_ids(a, first, [])
        state = a.resume_state()
        assert state.run_id and state.last_event_id == first
        # gomuks-rpc.md §7.1: close code 1000 keeps the backend's buffer entry (1001 frees it).
        a.close(keep_resume=True)
    assert a.resume_state() == state  # kept after close
    newest = backend.push(15)  # missed while no client is connected
    resumes = backend.stats()["resumes"]
    with client(backend, resume=state) as b:
        seen: List[Any] = []
        ids = buffered_ids(b, newest, seen)
        assert ids == list(range(first - 1, newest - 1, -1))
        assert [e for e in seen if e.kind == EventKind.CONNECTED][0].resume_attempted
        # Nothing is delivered twice afterwards either.
        more = backend.push(1)
        assert buffered_ids(b, more, []) == [more]
    assert backend.stats()["resumes"] == resumes + 1


def test_events_never_taken_come_back_to_the_client_given_the_resume_state(
    backend: Backend,
) -> None:
    """gomuks-rpc.md §7.2: the resume state counts only the events the app took. Events the
    client read but the app never iterated (held by the binding or by the library) are
    replayed to the next client, which resumes exactly after the last one the app saw."""
    with client(backend) as a:
        init_complete(a)
        first = backend.push(3)
        buffered_ids(a, first, [])
        unread = backend.push(5)
        deadline = time.monotonic() + 10
        # Read by the binding or the library, never handed to the app.
        while a.stats().queued_events < 5:
            assert time.monotonic() < deadline, "the events never arrived"
            time.sleep(0.01)
        assert a.resume_state().last_event_id == first
        a.close(keep_resume=True)
        state = a.resume_state()
    assert state.last_event_id == first, state
    newest = backend.push(2)
    with client(backend, resume=state) as b:
        ids = buffered_ids(b, newest, [])
        assert ids == list(range(first - 1, newest - 1, -1)), (ids, unread)


def test_a_resume_point_out_of_range_is_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        Client("http://127.0.0.1:9", resume=("1", 2**64 - 50))


def test_a_final_close_lets_the_backend_forget_the_resume_point(backend: Backend) -> None:
    """gomuks-rpc.md §7.1: a plain close() sends 1001 and the backend drops what it kept."""
    with client(backend) as a:
        init_complete(a)
        first = backend.push(2)
        buffered_ids(a, first, [])
        state = a.resume_state()
        open_now = backend.stats()["connections"]
    # The backend forgets once it has handled the 1001, which close() does not wait for.
    backend.wait_stats(lambda s: s["connections"] == open_now - 1)
    backend.push(3)
    resumes = backend.stats()["resumes"]
    with client(backend, resume=state) as b:
        init_complete(b)
    assert backend.stats()["resumes"] == resumes


def test_a_small_event_queue_applies_backpressure_without_loss(backend: Backend) -> None:
    with client(backend, event_queue_size=4, batch_size=2) as c:
        init_complete(c)
        newest = backend.push(60)
        time.sleep(0.3)  # let the reader hit the limit
        assert len(c._core.queue) <= 4 + 2  # the limit, overshot by at most one batch
        ids = buffered_ids(c, newest, [])
        assert ids == list(range(newest + 59, newest - 1, -1))
        assert c.request("echo", {"ok": 1}) == {"ok": 1}


# -- disconnects and close -----------------------------------------------------------------


def test_server_close_codes_reconnect(backend: Backend) -> None:
    with client(backend) as c:
        init_complete(c)
        backend.close_all(4001, "go-away")  # the testkit does not URL-decode
        d = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        assert d.status == Status.ERR_REMOTE_CLOSED and d.close_code == 4001
        assert d.reason == "go-away" and d.retry_in_ms is not None
        assert isinstance(d.error, tether.RemoteClosedError)
        wait_event(c, lambda e: e.kind == EventKind.CONNECTED and e.attempt >= 2)
        assert c.request("echo", {"back": True}) == {"back": True}


@pytest.mark.parametrize(
    "fault,status",
    [("invalid_json", Status.ERR_JSON), ("invalid_deflate", Status.ERR_INFLATE)],
)
def test_bad_server_data_disconnects_with_a_specific_status(
    backend: Backend, fault: str, status: Status
) -> None:
    with client(backend) as c:
        init_complete(c)
        backend.fault(fault)
        d = wait_event(c, lambda e: e.kind == EventKind.DISCONNECTED)
        assert d.status == status and d.retry_in_ms is not None
        wait_event(c, lambda e: e.kind == EventKind.CONNECTED)


def test_bad_credentials_end_the_client_with_unauthorized(backend: Backend) -> None:
    c = Client(backend.url, username="tether", password="wrong")
    try:
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.CLOSED, seen=seen)
        d = [e for e in seen if e.kind == EventKind.DISCONNECTED][-1]
        assert d.status == Status.ERR_UNAUTHORIZED and d.retry_in_ms is None
        assert isinstance(c.fatal, tether.UnauthorizedError)
        assert c.closed and c.next_event(0) is None and list(c.events()) == []
        with pytest.raises(tether.UnauthorizedError, match="unauthorized|401"):
            c.wait_connected(1)
        with pytest.raises(tether.ClientClosedError):
            c.request("echo", {})
    finally:
        c.close()


def test_close_fails_pending_requests_and_sends_1001(backend: Backend) -> None:
    c = client(backend)
    init_complete(c)
    p = c.submit("sleep", {"ms": 5000})
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 5 * SLOW
    with pytest.raises(tether.ClientClosedError):
        p.result(5 * SLOW)
    with pytest.raises(tether.ClientClosedError):
        c.request("echo", {})
    c.close()  # idempotent
    rest = list(c.events(timeout=5))
    assert rest and rest[-1].kind == EventKind.CLOSED
    backend.wait_stats(lambda s: s["last_client_close_code"] == 1001)


def test_an_unreferenced_client_is_closed_by_the_garbage_collector(backend: Backend) -> None:
    before = backend.stats()["total_connections"]
    c = client(backend)
    c.wait_connected(10 * SLOW)
    backend.wait_stats(lambda s: s["total_connections"] == before + 1 and s["connections"] >= 1)
    del c
    gc.collect()
    # A close the app did not ask for keeps the resume point (1000, gomuks-rpc.md §7.1).
    backend.wait_stats(lambda s: s["connections"] == 0 and s["last_client_close_code"] == 1000)


def test_a_collection_on_a_thread_that_holds_the_clients_lock_does_not_deadlock(
    backend: Backend,
) -> None:
    # The garbage collector can run the finalizer at any allocation, also on the delivery
    # thread while it holds the client's (not reentrant) lock: the close must not wait there.
    c = client(backend)
    c.wait_connected(10 * SLOW)
    core = c._core
    done = threading.Event()

    def collected_under_the_lock() -> None:
        with core.lock:
            core.close_from_gc()
        done.set()

    t = threading.Thread(target=collected_under_the_lock, daemon=True)
    t.start()
    assert done.wait(5 * SLOW), "the finalizer waited for a lock its own thread holds"
    # And it did close: the backend saw the close that keeps the resume point.
    backend.wait_stats(lambda s: s["connections"] == 0 and s["last_client_close_code"] == 1000)
    c.close()


@pytest.mark.parametrize("callbacks", [False, True])
def test_close_after_an_internal_panic_frees_at_once_and_raises_nothing(
    backend: Backend, monkeypatch: Any, callbacks: bool
) -> None:
    # A panic inside a C call leaves that handle refusing everything but its free
    # (TETHER_ERR_PANIC), so no CLOSED comes through it. The library cannot be made to panic
    # on purpose: its answer to close is replaced; everything else is the real client.
    import tether._base as base

    c = client(backend, on_event=(lambda ev: None) if callbacks else None)
    c.wait_connected(10 * SLOW)
    p = c.submit("sleep", {"ms": 60000})
    panicked = lambda ptr: (int(Status.ERR_PANIC), "internal panic: injected")  # noqa: E731
    monkeypatch.setattr(base, "_close", panicked)
    monkeypatch.setattr(base, "_close_keep_resume", panicked)
    t0 = time.monotonic()
    c.close(timeout=30)
    assert time.monotonic() - t0 < 5 * SLOW, "close waited for a CLOSED that cannot come"
    assert not c._core.handle.live
    with pytest.raises(tether.ClientClosedError):
        p.result(1)
    backend.wait_stats(lambda s: s["connections"] == 0)


def test_close_after_an_internal_panic_ends_the_reader_thread(
    backend: Backend, monkeypatch: Any
) -> None:
    # As above, with nothing pending: the binding's reader thread waits in poll(2) on the
    # library's descriptor, where nothing comes any more; the close must wake it.
    import tether._base as base

    c = client(backend)
    c.wait_connected(10 * SLOW)
    reader = c._core.reader
    assert reader is not None
    time.sleep(0.3)  # nobody consumes: the reader takes over the wait
    panicked = lambda ptr: (int(Status.ERR_PANIC), "internal panic: injected")  # noqa: E731
    monkeypatch.setattr(base, "_close", panicked)
    monkeypatch.setattr(base, "_close_keep_resume", panicked)
    c.close(timeout=30)
    reader.join(3 * SLOW)
    assert not reader.is_alive(), "the reader thread waits for ever"


# -- callback mode -------------------------------------------------------------------------


def test_callback_mode_delivers_events_and_completes_requests(backend: Backend) -> None:
    got: List[Any] = []
    ready = threading.Event()
    threads = set()

    def on_event(ev: Any) -> None:
        threads.add(threading.current_thread().name)
        got.append(ev)
        if ev.kind == EventKind.MESSAGE and ev.command == "init_complete":
            ready.set()

    with client(backend, on_event=on_event) as c:
        assert ready.wait(10 * SLOW)
        assert c.request("echo", {"cb": 1}) == {"cb": 1}
        with pytest.raises(tether.WrongModeError):
            c.next_event(0)
        newest = backend.push(3)
        deadline = time.monotonic() + 10 * SLOW
        while not any(e.id == newest for e in got) and time.monotonic() < deadline:
            time.sleep(0.01)
        ids = [e.id for e in got if e.kind == EventKind.MESSAGE and e.id < 0]
        assert ids == [newest + 2, newest + 1, newest]
    assert got[-1].kind == EventKind.CLOSED
    assert all(e.kind != EventKind.RESPONSE for e in got)
    assert threading.current_thread().name not in threads  # the library's dispatcher thread


def test_callbacks_can_submit_but_not_block_and_close_from_inside(backend: Backend) -> None:
    results: List[Any] = []
    done, created = threading.Event(), threading.Event()

    def on_event(ev: Any) -> None:
        if ev.kind == EventKind.MESSAGE and ev.command == "init_complete":
            created.wait(10 * SLOW)  # init_complete can come before the constructor returns
            try:
                box["c"].request("echo", {})
            except tether.StateError as e:
                results.append(e)
            p = box["c"].submit("echo", {"from": "callback"})
            # Its reply comes on this thread: waiting for it here is refused, not endless.
            try:
                p.result()
            except tether.StateError as e:
                results.append(e)
            results.append(p)
            box["c"].close()  # closing from inside the callback must not deadlock
        if ev.kind == EventKind.CLOSED:
            done.set()

    box: dict = {}
    box["c"] = c = client(backend, on_event=on_event)
    created.set()
    assert done.wait(10 * SLOW)
    assert isinstance(results[0], tether.StateError)
    assert isinstance(results[1], tether.StateError)
    # The submitted request was answered or failed with the close; never left hanging.
    try:
        assert results[2].result(5 * SLOW) == {"from": "callback"}
    except tether.ClientClosedError:
        pass
    assert c.closed
    deadline = time.monotonic() + 5 * SLOW
    while c._core.handle.live and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not c._core.handle.live  # freed once the CLOSED callback returned
    assert c._core.destroyed.wait(5 * SLOW)


def test_the_callback_is_kept_alive_until_the_library_is_done(backend: Backend) -> None:
    from tether import client as client_mod

    got: List[int] = []
    c = client(backend, on_event=lambda ev: got.append(ev.kind))  # only the client holds it
    ctx = c._core.ctx
    gc.collect()
    assert ctx in client_mod._registry
    c.wait_connected(10 * SLOW)
    assert c.request("echo", {"n": 1}) == {"n": 1}
    c.close()
    assert c._core.destroyed.wait(5 * SLOW)
    assert ctx not in client_mod._registry  # released by destroy(ctx)
    assert got[0] == EventKind.CONNECTING and got[-1] == EventKind.CLOSED


def test_close_returns_within_its_timeout_while_a_callback_is_busy(backend: Backend) -> None:
    """close(timeout) does not wait for a running callback past its timeout: the native
    client is freed later, when CLOSED is delivered, and nothing is lost meanwhile."""
    entered, release = threading.Event(), threading.Event()
    kinds: List[Any] = []

    def on_event(ev: Any) -> None:
        kinds.append(ev.kind)
        if ev.kind == EventKind.MESSAGE and ev.command == "init_complete":
            entered.set()
            release.wait(4 * SLOW)  # a slow callback (bounded, so a regression only fails)

    c = client(backend, on_event=on_event)
    try:
        assert entered.wait(10 * SLOW)
        pending = c.submit("sleep", {"ms": 5000})
        t0 = time.monotonic()
        c.close(timeout=0.5)
        took = time.monotonic() - t0
        assert took < 0.5 + 0.5 * SLOW, f"close(timeout=0.5) took {took:.2f} s"
        assert c.closed
        # The accepted request has its outcome when close() returns.
        assert pending.done()
        with pytest.raises(tether.ClientClosedError):
            pending.result(0)
    finally:
        release.set()
    # Once the callback returns, the dispatcher delivers the rest, CLOSED last, and the
    # client is freed from the CLOSED callback; destroy follows.
    assert c._core.destroyed.wait(10 * SLOW)
    assert not c._core.handle.live
    assert kinds[-1] == EventKind.CLOSED
    c.close()  # idempotent


def test_callbacks_closing_each_others_clients_do_not_deadlock(backend: Backend) -> None:
    """Each client's on_event closes the other client while both callbacks run: neither may
    wait for the other's dispatcher. A subprocess, so that a deadlock fails the test (by its
    timeout) instead of hanging the suite."""
    code = textwrap.dedent(
        """
        import sys, threading, time
        import tether
        URL = sys.argv[1] if len(sys.argv) > 1 else __import__("os").environ["URL"]
        OPTS = dict(username="tether", password="tether-password")
        go = threading.Event()
        inside = threading.Barrier(2, timeout=10)
        clients = {}
        took = {}
        kinds = {"a": [], "b": []}

        def make(me, other):
            def on_event(ev):
                kinds[me].append(ev.kind)
                if ev.kind == tether.EventKind.MESSAGE and ev.command == "init_complete":
                    go.wait(10)
                    inside.wait()  # both callbacks are running now
                    t0 = time.monotonic()
                    clients[other].close(timeout=1)
                    took[me] = time.monotonic() - t0
            return on_event

        clients["a"] = tether.Client(URL, on_event=make("a", "b"), **OPTS)
        clients["b"] = tether.Client(URL, on_event=make("b", "a"), **OPTS)
        pending = {k: c.submit("sleep", {"ms": 5000}) for k, c in clients.items()}
        go.set()
        deadline = time.monotonic() + 10
        while len(took) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        print("TOOK", sorted(took.items()), flush=True)
        for k, p in pending.items():
            try:
                p.result(5)
                print("RESULT", k, "ok", flush=True)
            except tether.ClientClosedError:
                print("RESULT", k, "closed", flush=True)
        for k, c in clients.items():
            ok = c._core.destroyed.wait(10)
            print("FREED", k, ok and not c._core.handle.live, kinds[k][-1].name, flush=True)
        """
    )
    r = run_python(code, timeout=30, URL=backend.url)
    assert r.returncode == 0, r.stdout + r.stderr
    took = dict(eval(r.stdout.split("TOOK ", 1)[1].splitlines()[0]))
    assert set(took) == {"a", "b"}, r.stdout + r.stderr
    assert all(t < 1.0 + 0.5 * SLOW for t in took.values()), took
    assert "RESULT a closed" in r.stdout and "RESULT b closed" in r.stdout, r.stdout
    assert "FREED a True CLOSED" in r.stdout and "FREED b True CLOSED" in r.stdout, r.stdout


def busy(stop: threading.Event) -> int:
    """Pure-Python work that holds the GIL (switching only at the interpreter's interval)."""
    n = 0
    while not stop.is_set():
        for i in range(10000):
            n += i * i % 7
    return n


def test_a_callback_runs_while_another_python_thread_is_busy(backend: Backend) -> None:
    arrived = threading.Event()
    newest_box: List[int] = []
    got: List[int] = []

    def on_event(ev: Any) -> None:
        got.append(ev.id)
        if newest_box and ev.id == newest_box[0]:
            arrived.set()

    stop = threading.Event()
    worker = threading.Thread(target=busy, args=(stop,))
    with client(backend, on_event=on_event) as c:
        c.wait_connected(10 * SLOW)
        time.sleep(0.2)  # let the connect sequence pass
        worker.start()
        try:
            t0 = time.monotonic()
            newest = backend.push(10)
            newest_box.append(newest)
            # The events can be delivered before push() returns: look at what came already
            # (with the callback's own check, one of the two sees the other's append).
            if newest in got:
                arrived.set()
            assert arrived.wait(5 * SLOW), "callbacks starved by a busy thread"
            assert c.request("echo", {"busy": True}, timeout=5) == {"busy": True}
            assert time.monotonic() - t0 < 5 * SLOW
            assert worker.is_alive()  # it really was busy the whole time
        finally:
            stop.set()
            worker.join(10)
    ids = [i for i in got if i < 0]
    assert ids == list(range(newest_box[0] + 9, newest_box[0] - 1, -1))


def test_poll_mode_requests_complete_while_another_thread_is_busy(backend: Backend) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=busy, args=(stop,))
    with client(backend) as c:
        c.wait_connected(10 * SLOW)
        worker.start()
        try:
            t0 = time.monotonic()
            for i in range(20):
                assert c.request("echo", {"i": i}, timeout=5) == {"i": i}
            assert time.monotonic() - t0 < 5 * SLOW
        finally:
            stop.set()
            worker.join(10)


def test_an_interrupt_while_waiting_cancels_the_request(backend: Backend) -> None:
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    with client(backend) as c:
        c.wait_connected(10 * SLOW)
        cancelled: List[int] = []
        real_cancel = c._core.cancel

        def spy(rid: int) -> None:
            cancelled.append(rid)
            real_cancel(rid)

        c._core.cancel = spy  # type: ignore[assignment,method-assign]
        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            t0 = time.monotonic()
            with pytest.raises(Interrupted):
                c.request("sleep", {"ms": 5000})  # like Ctrl-C while blocked in request()
            assert time.monotonic() - t0 < 2 * SLOW
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert len(cancelled) == 1
        assert c.request("echo", {"after": "interrupt"}) == {"after": "interrupt"}


# -- who polls the library: the waiting thread itself, else the reader thread ---------------


def test_an_interrupt_while_waiting_for_events_loses_none(backend: Backend) -> None:
    # Ctrl-C reaches a main thread that waits in events() on a quiet connection (it waits
    # on the library's descriptor itself, interruptibly), and the stream goes on intact.
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted()

    with client(backend, ping_interval=60) as c:
        init_complete(c)
        old = signal.signal(signal.SIGALRM, handler)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.3)
            t0 = time.monotonic()
            with pytest.raises(Interrupted):
                for _ in c.events():
                    pass
            assert time.monotonic() - t0 < 2 * SLOW
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        newest = backend.push(50)
        assert buffered_ids(c, newest, []) == list(range(newest + 49, newest - 1, -1))
        assert c.request("echo", {"after": "interrupt"}) == {"after": "interrupt"}


def test_interrupts_while_events_stream_in_lose_none(backend: Backend) -> None:
    # A signal handler that raises (like Ctrl-C) keeps hitting a main thread that takes and
    # delivers batches itself; the events the library handed over are never lost with it.
    import signal

    class Interrupted(Exception):
        pass

    def handler(signum: int, frame: Any) -> None:
        # Only inside the binding (where it takes and delivers), never in this test's own
        # bookkeeping, which a raise could break at any line.
        if frame is not None and "/tether/" in frame.f_code.co_filename:
            raise Interrupted()

    with client(backend, event_queue_size=100000) as c:
        init_complete(c)
        newest = backend.push(2000)
        ids: List[int] = []
        interrupts = 0
        old = signal.signal(signal.SIGALRM, handler)
        deadline = time.monotonic() + 30 * SLOW
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.002, 0.002)
            while (not ids or ids[-1] != newest) and time.monotonic() < deadline:
                try:
                    for ev in c.events(timeout=5 * SLOW):
                        # Slots, not the `id` property: a raise inside the binding's code
                        # here would be this loop's loss, after the event was handed over.
                        if ev.kind == EventKind.MESSAGE and ev.request_id < 0:
                            ids.append(ev.request_id)
                            if ev.request_id == newest:
                                break
                except Interrupted:
                    interrupts += 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        assert interrupts > 0
        # Not even the event being taken from the queue as the interrupt comes is lost.
        assert ids == list(range(newest + 1999, newest - 1, -1))


class _Interrupted(Exception):
    pass


def _raising(signum: int, frame: Any) -> None:
    raise _Interrupted()  # like Ctrl-C's KeyboardInterrupt (SIGINT may be ignored here)


def test_an_interrupt_as_an_event_leaves_the_queue_loses_nothing(backend: Backend) -> None:
    # CPython runs a signal handler right after a call returns. One that raised (Ctrl-C) as
    # the queue's popleft returned lost the event it took, which the library had already
    # counted as handed over, so the resume point claimed it too (gomuks spec 7.1).
    import signal
    from collections import deque

    class Queue(deque):  # type: ignore[type-arg]
        """The binding's queue; the first popleft raises a signal once it has taken."""

        armed = True

        def popleft(self) -> Any:
            ev = super().popleft()
            if self.armed:
                self.armed = False
                signal.raise_signal(signal.SIGUSR1)
            return ev

    with client(backend) as c:
        init_complete(c)
        core = c._core
        newest = backend.push(3)
        assert c.next_event(5 * SLOW).request_id == newest + 2
        deadline = time.monotonic() + 5 * SLOW
        while len(core.queue) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)  # the reader thread delivers while nobody waits
        assert len(core.queue) == 2
        core.queue = Queue(core.queue)
        old = signal.signal(signal.SIGUSR1, _raising)
        try:
            with pytest.raises(_Interrupted):
                c.next_event(0)
        finally:
            signal.signal(signal.SIGUSR1, old)
        assert not core.queue.armed
        assert [c.next_event(0).request_id for _ in range(2)] == [newest + 1, newest]
        assert c.resume_state().last_event_id == newest


def test_an_interrupt_as_the_polling_token_is_taken_leaves_it_free(backend: Backend) -> None:
    # CPython runs a signal handler right after a call returns. One that raises (Ctrl-C) as
    # the main thread's acquire of the polling token returns must not leave the token taken
    # by nobody: every later wait on the client would be stuck.
    import signal

    from tether._signals import rescan_signals

    with client(backend) as c:
        init_complete(c)
        core = c._core
        real = core.token

        class Token:
            """The real token; the main thread's first acquire raises a signal as it returns."""

            armed = True

            def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
                got = real.acquire(blocking, timeout)
                if self.armed and threading.current_thread() is threading.main_thread():
                    self.armed = False
                    signal.raise_signal(signal.SIGUSR1)
                return got

            def release(self) -> None:
                real.release()

            def locked(self) -> bool:
                return real.locked()

        token = Token()
        old = signal.signal(signal.SIGUSR1, _raising)
        core.token = token
        try:
            rescan_signals()
            with pytest.raises(_Interrupted):
                c.request("sleep", {"ms": 200}, timeout=5 * SLOW)
            assert not token.armed
        finally:
            core.token = real
            signal.signal(signal.SIGUSR1, old)
            rescan_signals()
        assert c.request("echo", {"after": "interrupt"}, timeout=5 * SLOW) == {"after": "interrupt"}


def test_every_held_signal_is_handled_and_restored_when_one_handler_raises() -> None:
    # Two signals held back during one batch: the first one's handler raises (Ctrl-C), and
    # the second one's handler still runs; the first exception is the one that propagates.
    import signal

    from tether import _signals as tc

    ran: List[str] = []

    def app_handler(n: int, f: Any) -> None:
        ran.append("USR2")

    old1 = signal.signal(signal.SIGUSR1, _raising)
    old2 = signal.signal(signal.SIGUSR2, app_handler)
    try:
        tc.rescan_signals()
        with pytest.raises(_Interrupted):
            with tc.signals_held():
                # To this thread, before raise_signal returns (os.kill may reach another
                # thread later: under valgrind, after the test restored SIG_DFL).
                signal.raise_signal(signal.SIGUSR1)
                signal.raise_signal(signal.SIGUSR2)
                assert ran == []  # held back
        assert ran == ["USR2"]
        assert signal.getsignal(signal.SIGUSR1) is _raising
        assert signal.getsignal(signal.SIGUSR2) is app_handler
    finally:
        signal.signal(signal.SIGUSR1, old1)
        signal.signal(signal.SIGUSR2, old2)
        tc.rescan_signals()


def test_a_signal_raising_while_handlers_are_restored_leaves_none_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Ctrl-C landing after its own handler is back but before the next one is: the exception
    # must not leave a later signal with the binding's noting stand-in, which the next batch
    # would then take for the app's handler, and the app lose its handler for good.
    import signal

    from tether import _signals as tc

    ran: List[str] = []

    def app_handler(n: int, f: Any) -> None:
        ran.append("USR2")

    real = tc._sig
    raised: List[int] = []

    class Shim:
        getsignal = staticmethod(real.getsignal)

        @staticmethod
        def signal(n: int, h: Any) -> Any:
            prev = real.signal(n, h)
            if h is _raising and not raised:
                raised.append(n)
                signal.raise_signal(n)  # handled on return, mid-restore
            return prev

    old1 = signal.signal(signal.SIGUSR1, _raising)
    old2 = signal.signal(signal.SIGUSR2, app_handler)
    try:
        tc.rescan_signals()
        assert signal.SIGUSR1 < signal.SIGUSR2  # restored in this order
        monkeypatch.setattr(tc, "_sig", Shim)
        with pytest.raises(_Interrupted):
            with tc.signals_held():
                pass
        monkeypatch.setattr(tc, "_sig", real)
        assert raised == [signal.SIGUSR1]
        assert signal.getsignal(signal.SIGUSR2) is app_handler
        assert signal.getsignal(signal.SIGUSR1) is _raising
        signal.raise_signal(signal.SIGUSR2)
        assert ran == ["USR2"]
    finally:
        signal.signal(signal.SIGUSR1, old1)
        signal.signal(signal.SIGUSR2, old2)
        tc.rescan_signals()


def _raise_at_each_call(tries: List[Callable[[], Any]], check: Callable[[int], None]) -> int:
    """Runs the ``tries`` with an exception raised at the entry of the first, second, ...
    Python function called inside the binding (a signal handler that raises, like Ctrl-C,
    runs at such points), calling ``check(point)`` after each; a point that no try reaches
    ends the sweep. A trace function raises it: the one way to raise exactly there."""
    import sys

    point = 0
    reached = True
    while reached:
        reached = False
        for attempt in tries:
            left = [point]

            def trace(frame: Any, event: str, arg: Any) -> Any:
                if event == "call" and "/tether/" in frame.f_code.co_filename:
                    if left[0] == 0:
                        left[0] = -1
                        raise _Interrupted()  # also ends the tracing
                    left[0] -= 1
                return None

            sys.settrace(trace)
            try:
                attempt()
            except _Interrupted:
                reached = True
            finally:
                sys.settrace(None)
            check(point)
            if reached:
                break
        point += 1
        assert point < 5000
    return point


def test_a_handler_raising_at_any_call_of_a_request_leaves_the_client_working(
    backend: Backend,
) -> None:
    # None of those points may leave the client stuck (the polling token held by nobody, a
    # waiter never woken): the next request still gets its reply. A reply that is ready at
    # once takes fewer calls than one waited for, so both kinds are tried.
    with client(backend) as c:
        c.wait_connected(10 * SLOW)

        def check(point: int) -> None:
            assert c.request("echo", {"after": point}, timeout=5 * SLOW) == {"after": point}

        points = _raise_at_each_call(
            [
                lambda: c.request("sleep", {"ms": 2}, timeout=5 * SLOW),
                lambda: c.request("echo", {}, timeout=5 * SLOW),
                lambda: c.request("sleep", {"ms": 2}, timeout=5 * SLOW),
            ],
            check,
        )
        assert points > 20  # the sweep went through the request path


def test_a_handler_raising_at_any_call_of_an_event_wait_leaves_the_client_working(
    backend: Backend,
) -> None:
    # The same for a thread waiting in next_event(): events keep coming afterwards (an event
    # taken from the queue when the exception hit may be lost with it, as documented).
    with client(backend, ping_interval=60) as c:
        init_complete(c)

        def wait_for_new() -> None:
            backend.push(3)
            c.next_event(timeout=5 * SLOW)

        def check(point: int) -> None:
            newest = backend.push(1)
            assert wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.id == newest, 5)

        points = _raise_at_each_call([wait_for_new, wait_for_new], check)
        assert points > 10


def test_close_fails_a_request_waiting_on_a_silent_server_at_once(
    make_backend: Any,
) -> None:
    # The requesting thread waits for its reply itself (on the library's descriptor): a
    # close that gives up on CLOSED must still end that wait, not leave it to the library.
    b = make_backend()
    c = Client(b.url, **gomuks_opts())
    c.wait_connected(10 * SLOW)
    b.freeze()
    try:
        outcome: List[Any] = []

        def ask() -> None:
            try:
                c.request("echo", {}, timeout=30)
            except Exception as e:  # noqa: BLE001 - the test inspects it
                outcome.append((e, time.monotonic()))

        t = threading.Thread(target=ask)
        t.start()
        time.sleep(0.3)
        c.close(0.2)
        closed_at = time.monotonic()
        t.join(10 * SLOW)
        assert outcome, "request() still waits"
        err, at = outcome[0]
        assert isinstance(err, tether.ClientClosedError), err
        assert at - closed_at < 0.5 * SLOW
    finally:
        b.thaw()


def test_requests_inside_the_events_loop_are_answered_and_no_event_is_lost(
    backend: Backend,
) -> None:
    # The consuming thread polls for its own reply while events keep coming; each event
    # is delivered once, in order, around the replies.
    with client(backend) as c:
        init_complete(c)
        newest = backend.push(300)
        ids: List[int] = []
        replies = 0
        for ev in c.events(timeout=20 * SLOW):
            if ev.kind != EventKind.MESSAGE or ev.id >= 0:
                continue
            ids.append(ev.id)
            if len(ids) % 25 == 0:
                t0 = time.monotonic()
                assert c.request("echo", {"n": len(ids)}, timeout=5) == {"n": len(ids)}
                assert time.monotonic() - t0 < 2 * SLOW
                replies += 1
            if ev.id == newest:
                break
        assert ids == list(range(newest + 299, newest - 1, -1))
        assert replies == 12


def test_a_reply_behind_a_full_queue_ends_the_wait_at_the_requests_timeout(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # gomuks-rpc.md §3: every request ends. Its reply queues behind the events this thread
    # has not taken; with the queue full it cannot arrive, so the wait ends at the request's
    # timeout and the grace period (shortened here), as request()'s does.
    monkeypatch.setattr(tether.client, "REQUEST_GRACE_S", 0.5)
    opts = gomuks_opts(event_queue_size=4, batch_size=2, request_timeout=1.0)
    with Client(backend.url, **opts) as c:
        init_complete(c)
        backend.push(60)
        wait_until(lambda: c.stats().queued_events >= 4, "a full queue")
        assert c.next_event(5 * SLOW) is not None
        p = c.submit("echo", {"x": 1})
        t0 = time.monotonic()
        with pytest.raises(tether.RequestTimeoutError):
            p.result()
        assert 1.5 <= time.monotonic() - t0 < 1.5 + 5 * SLOW
        with pytest.raises(tether.RequestTimeoutError):  # again, at once (cancelled once)
            p.result()
        assert c.submit("echo", {}).wait() is False
        # Once the events are taken, requests are answered again.
        for _ in c.events(timeout=0.5 * SLOW):
            pass
        assert c.request("echo", {"y": 2}) == {"y": 2}


def test_a_thread_waiting_in_events_delivers_the_replies_of_other_threads(
    backend: Backend,
) -> None:
    with client(backend) as c:
        init_complete(c)
        got: List[int] = []

        def consume() -> None:
            for ev in c.events():  # until CLOSED
                if ev.kind == EventKind.MESSAGE and ev.id < 0:
                    got.append(ev.id)

        t = threading.Thread(target=consume)
        t.start()
        time.sleep(0.3)  # the consumer now waits for events on the library's descriptor
        for i in range(30):
            t0 = time.monotonic()
            assert c.request("echo", {"i": i}, timeout=5) == {"i": i}
            assert time.monotonic() - t0 < 2 * SLOW
        newest = backend.push(40)
        deadline = time.monotonic() + 10 * SLOW
        while len(got) < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == list(range(newest + 39, newest - 1, -1))
        c.close()
        t.join(10 * SLOW)
        assert not t.is_alive()


def test_the_reader_thread_delivers_while_nobody_waits(backend: Backend) -> None:
    # Nobody calls events() or request(): the reader takes what arrives (state, events, up
    # to event_queue_size), so the app finds it queued.
    with client(backend) as c:
        deadline = time.monotonic() + 10 * SLOW
        while not c._core.connected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert c._core.connected
        newest = backend.push(20)
        while time.monotonic() < deadline and not any(
            e.kind == EventKind.MESSAGE and e.id == newest for e in list(c._core.queue)
        ):
            time.sleep(0.01)
        ids = [e.id for e in list(c._core.queue) if e.kind == EventKind.MESSAGE and e.id < 0]
        assert ids == list(range(newest + 19, newest - 1, -1))


# -- the JSON parser -----------------------------------------------------------------------


class RecordingLoads:
    """A ``json_loads`` that parses with ``json.loads`` and records what it was given."""

    def __init__(self) -> None:
        self.calls: List[bytes] = []

    def __call__(self, raw: bytes) -> Any:
        self.calls.append(raw)
        return json.loads(raw)


@pytest.mark.parametrize("mode", ["poll", "callback"])
def test_json_loads_parses_event_data_and_request_results(backend: Backend, mode: str) -> None:
    loads = RecordingLoads()
    got: List[Any] = []
    opts: Any = {"on_event": got.append} if mode == "callback" else {}
    with client(backend, json_loads=loads, **opts) as c:
        assert c.request("echo", {"via": "custom"}) == {"via": "custom"}
        assert any(b'{"via":"custom"}' in c for c in loads.calls)  # alone or in its batch's array
        newest = backend.push(3)
        if mode == "poll":
            wait_event(c, lambda e: e.id == newest, seen=got)
        else:
            deadline = time.monotonic() + 10 * SLOW
            while not any(e.id == newest for e in got) and time.monotonic() < deadline:
                time.sleep(0.01)
        ev = next(e for e in got if e.id == newest)
        assert isinstance(ev, tether.Event)
        before = len(loads.calls)
        assert ev.data == json.loads(ev.raw)
        assert ev.data is ev.data  # parsed once
        # One call: this event's payload alone, or the array of its batch's payloads.
        assert len(loads.calls[before:]) == 1
        assert loads.calls[before] == ev.raw or (loads.calls[before][:1] == b"[" and ev.raw in loads.calls[before])
    # Another client without the option keeps json.loads.
    assert tether.Event._loads is json.loads


def test_json_loads_that_is_not_callable_is_refused(backend: Backend) -> None:
    with pytest.raises(TypeError, match="json_loads"):
        client(backend, json_loads="orjson")


def test_orjson_parses_the_stream_as_json_does(backend: Backend) -> None:
    orjson = pytest.importorskip("orjson")
    with client(backend, json_loads=orjson.loads) as c:
        init_complete(c)
        newest = backend.push(50)
        seen: List[Any] = []
        wait_event(c, lambda e: e.id == newest, seen=seen)
        events = [e for e in seen if e.kind == EventKind.MESSAGE and e.raw]
        assert len(events) >= 50
        for e in events:
            assert e.data == json.loads(e.raw), e.command
        assert c.request("echo", {"n": [1, 2.5, None], "s": "héllo ✓"}) == {
            "n": [1, 2.5, None],
            "s": "héllo ✓",
        }


# -- credentials -----------------------------------------------------------------------------


def test_auth_token_from_the_login_authorizes_a_later_client(backend: Backend) -> None:
    """gomuks-rpc.md §1.2: the app persists the token instead of the password."""
    with client(backend) as c:
        c.wait_connected(10 * SLOW)
        token = c.auth_token()
        assert token
    assert c.auth_token() == token  # still readable after close
    with Client(backend.url, token=token) as c2:
        assert c2.auth_token() == token
        c2.wait_connected(10 * SLOW)
        assert c2.request("echo", {"t": 1}) == {"t": 1}


def test_a_batch_parses_its_payloads_with_one_call_and_an_error_stays_with_its_event() -> None:
    # The batch path's array parse (events.attach_batch_json), without a socket: valid
    # payloads parse together; a bad one makes each parse its own, so only it raises.
    from tether.events import Event, attach_batch_json

    calls: List[bytes] = []

    def loads(raw: bytes) -> Any:
        calls.append(raw)
        return json.loads(raw)

    evs = [Event(tether.EventKind.MESSAGE, -i, 0, "x", json.dumps({"i": i}).encode()) for i in range(4)]
    attach_batch_json(evs, loads)
    assert [e.data for e in reversed(evs)] == [{"i": i} for i in (3, 2, 1, 0)]
    assert calls == [b'[{"i": 0},{"i": 1},{"i": 2},{"i": 3}]']

    bad = [Event(tether.EventKind.MESSAGE, 0, 0, "x", b'{"ok":1}'), Event(tether.EventKind.MESSAGE, 0, 0, "x", b"{nope")]
    attach_batch_json(bad, json.loads)
    assert bad[0].data == {"ok": 1}
    with pytest.raises(ValueError):
        bad[1].data


def test_a_batch_of_large_payloads_parses_in_runs_of_bounded_size() -> None:
    # One array per run of consecutive payloads up to BATCH_JSON_BYTES together; a payload
    # larger than that alone parses by itself. Non-JSON kinds are skipped, not split on.
    from tether.events import BATCH_JSON_BYTES, Event, attach_batch_json

    calls: List[bytes] = []

    def loads(raw: bytes) -> Any:
        calls.append(raw)
        return json.loads(raw)

    def msg(i: int, size: int) -> Event:
        raw = json.dumps({"i": i, "pad": "x" * size}).encode()
        return Event(tether.EventKind.MESSAGE, -i, 0, "x", raw)

    third = BATCH_JSON_BYTES // 3
    evs = [msg(0, third), msg(1, third), Event(tether.EventKind.PONG), msg(2, third),
           msg(3, BATCH_JSON_BYTES), msg(4, 10), msg(5, 10)]
    attach_batch_json(evs, loads)
    got = [e.data for e in evs]
    assert [d["i"] for d in got if d is not None] == [0, 1, 2, 3, 4, 5]
    assert got[2] is None
    # [0, 1] fit together; 2 would overflow them, so it starts a run, which 3 overflows at
    # once; 3 is a run alone, then [4, 5]. A run of one parses its own payload with the
    # event's parser (not this loads).
    assert [[d["i"] for d in json.loads(c)] for c in calls] == [[0, 1], [4, 5]]
    assert all(len(c) <= BATCH_JSON_BYTES + 3 for c in calls)


def test_cancel_after_the_session_ended_returns_false(backend: Backend) -> None:
    # The request's CLIENT_CLOSED reply is still behind a callback that holds the dispatcher
    # when the server ends the session (a token it refuses): cancel() says it came too late
    # instead of raising StateError from the library's refusal.
    release = threading.Event()

    def on_event(ev: tether.Event) -> None:
        release.wait(10 * SLOW)

    # Frozen, the backend cannot refuse the token before the request is made.
    backend.freeze()
    c = tether.Client(backend.url, token="not-a-valid-token", on_event=on_event)
    try:
        p = c.submit("echo", {})
        backend.thaw()
        wait_until(lambda: c.state == tether.ConnectionState.CLOSED, "the session to end")
        assert not p.done()
        assert p.cancel() is False
    finally:
        backend.thaw()
        release.set()
        c.close()
    with pytest.raises(tether.ClientClosedError):
        p.result(5 * SLOW)
