"""The in-process transport (gomuks-rpc.md §12): both clients driving the C double of
libgomuksffi (tests/inproc/fake_gomuksffi.c, built once per session with
tests/inproc/build.sh), and the media calls refused over the websocket.

A process runs one in-process backend at a time, so every test closes its client before
the next one starts (``with``); the tests of this module run one after the other."""

from __future__ import annotations

import asyncio
import io
import os
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, List, Type

import pytest

import tether
from tether import Client, EventKind, Status
from tether.aio import AsyncClient, AsyncTransfer

from conftest import (
    REPO,
    SLOW,
    Backend,
    await_event,
    foreign_env,
    gomuks_opts,
    run_python,
    wait_event,
    wait_until,
)

#: The events GomuksStart of the double delivers, in order (after CONNECTING, CONNECTED).
STARTUP = ["client_state", "sync_status"]


@pytest.fixture(scope="session")
def fake_ffi(tmp_path_factory: Any) -> Path:
    """``libfakegomuksffi.so`` (and its ``-nodownload`` variant beside it), built once."""
    out = tmp_path_factory.mktemp("fakeffi")
    script = REPO / "tests" / "inproc" / "build.sh"
    r = subprocess.run([str(script), str(out)], capture_output=True, text=True,
                       env=foreign_env(), timeout=120)
    if r.returncode != 0:
        pytest.fail(f"{script} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    lib = out / "libfakegomuksffi.so"
    assert lib.is_file(), r.stdout
    return lib


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root the library creates (it does not exist yet)."""
    return tmp_path / "gomuks-root"


def inproc(lib: Path, root: Path, **opts: Any) -> Client:
    return Client(in_process=(lib, root), **opts)


def started(lib: Path, root: Path, **opts: Any) -> Client:
    """A client past its startup events (CONNECTING, CONNECTED and the two MESSAGEs)."""
    c = inproc(lib, root, **opts)
    try:
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == STARTUP[-1])
    except BaseException:
        c.close()
        raise
    return c


def drain(c: Client, timeout: float = 0.2) -> List[Any]:
    """The events queued now (waiting ``timeout`` s for the last one)."""
    out: List[Any] = []
    while True:
        ev = c.next_event(timeout)
        if ev is None:
            return out
        out.append(ev)


def pattern(n: int) -> bytes:
    """The double's file ``mxc://fake/N``: byte k is k % 251."""
    return bytes(k % 251 for k in range(n))


def arun(coro: Awaitable[Any], timeout: float = 30.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout * SLOW))  # type: ignore[arg-type]


# -- configuration -------------------------------------------------------------------------


def test_the_in_process_option_is_checked_before_the_library_is_loaded(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="pair"):
        Client(in_process=str(tmp_path))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pair"):
        Client(in_process=(tmp_path,))  # type: ignore[arg-type]
    with pytest.raises(tether.InvalidArgumentError, match="NUL"):
        Client(in_process=("lib\0gomuks.so", tmp_path))
    # tether_client_new's checks: in-process is for gomuks, and a websocket needs a URL.
    with pytest.raises(tether.ConfigError, match="gomuks"):
        Client(in_process=("libgomuksffi.so", tmp_path), protocol="rwws")
    with pytest.raises(tether.ConfigError, match="URL"):
        Client()
    # A library that is not there fails at connect, with its path in the message.
    with pytest.raises(tether.ConfigError, match="no-such-libgomuksffi.so"):
        Client(in_process=(tmp_path / "no-such-libgomuksffi.so", tmp_path / "root"))


def test_progress_is_read_from_the_json_number_the_batch_path_carries() -> None:
    ev = tether.Event(EventKind.PROGRESS, 7, 0, "", b"33.333333333333336")
    assert ev.progress == pytest.approx(100 / 3) and ev.data == pytest.approx(100 / 3)
    assert tether.Event(EventKind.PROGRESS, 7, 0, "", b"100").progress == 100.0
    assert "progress=100.0" in repr(tether.Event(EventKind.PROGRESS, 7, 0, "", b"100"))
    assert tether.Event(EventKind.CHUNK, 7, 0, "", b"100").progress is None
    assert tether.Event(EventKind.CHUNK, 7, 0, "", b"\x00\xff").data is None
    assert tether.Event(EventKind.MESSAGE, 0, 0, "x", b"{}").progress is None


# -- §12.2/§12.3: the life of an in-process client ------------------------------------------


def test_spec12_3_startup_events_arrive_through_the_in_process_transport(
    fake_ffi: Path, root: Path
) -> None:
    with inproc(fake_ffi, root) as c:
        c.wait_connected(10 * SLOW)
        seen: List[Any] = []
        wait_event(c, lambda e: e.kind == EventKind.MESSAGE and e.command == STARTUP[-1],
                   seen=seen)
        assert [e.kind for e in seen] == [EventKind.CONNECTING, EventKind.CONNECTED,
                                          EventKind.MESSAGE, EventKind.MESSAGE]
        assert seen[0].attempt == 1 and seen[1].attempt == 1
        assert not seen[1].resume_attempted
        assert [e.command for e in seen[2:]] == STARTUP
        assert all(e.id == 0 for e in seen[2:])  # no event buffer in-process
        assert seen[2].data == {"is_logged_in": True, "is_verified": True,
                                "user_id": "@fake:localhost", "device_id": "FAKE"}
        assert seen[3].data == {"type": "waiting"}
        assert c.connected and c.state == tether.ConnectionState.CONNECTED
        s = c.stats()
        assert s.connections == 1 and s.connect_attempts == 1
        assert root.is_dir()  # created by the library


def test_spec12_2_requests_get_the_backends_reply_and_its_error_text(
    fake_ffi: Path, root: Path
) -> None:
    with started(fake_ffi, root) as c:
        payload = {"text": "héllo ✓", "n": [1, 2.5, None, True]}
        assert c.request("echo", payload) == payload
        assert c.request("echo") == {}
        assert c.request("get_account_info")["user_id"] == "@fake:localhost"
        with pytest.raises(tether.RemoteError) as e:
            c.request("x")
        assert e.value.message == 'unknown command "x"'
        assert e.value.status == Status.ERR_REMOTE and e.value.request_id > 0
        replies = [c.submit("echo", {"i": i}) for i in range(50)]
        assert [p.result(10 * SLOW) for p in replies] == [{"i": i} for i in range(50)]


def test_spec12_3_a_timeout_and_a_cancel_answer_at_once_and_no_late_reply_follows(
    fake_ffi: Path, root: Path
) -> None:
    with started(fake_ffi, root) as c:
        t0 = time.monotonic()
        with pytest.raises(tether.RequestTimeoutError) as e:
            c.request("sleep", {"ms": 1500}, timeout=0.2)
        assert e.value.status == Status.ERR_REQUEST_TIMEOUT
        p = c.submit("sleep", {"ms": 1500})
        assert p.cancel()
        with pytest.raises(tether.RequestCancelledError):
            p.result(5 * SLOW)
        # Both answered while the backend still sleeps (the FFI cannot be interrupted).
        assert time.monotonic() - t0 < 1.3 * SLOW
        # Both sleeps end meanwhile: their replies must be dropped by the library, not
        # delivered as a second RESPONSE (which would land among the unclaimed replies).
        time.sleep(1.7)
        assert c.request("echo", {"after": "sleeps"}) == {"after": "sleeps"}
        assert c._core.orphans == {} and c._core.pending == {}
        assert all(e.kind != EventKind.RESPONSE for e in drain(c, 0))
        assert c.stats().requests_timed_out >= 1


def test_spec12_2_a_request_made_during_the_start_is_answered_after_it(
    fake_ffi: Path, root: Path
) -> None:
    root.mkdir()
    (root / "fake_start_delay_ms").write_text("600")
    t0 = time.monotonic()
    with inproc(fake_ffi, root) as c:
        assert c.request("echo", {"early": True}, timeout=10 * SLOW) == {"early": True}
        assert time.monotonic() - t0 >= 0.5
        # The reply comes after the start: CONNECTED and its events are all queued before it.
        seen = drain(c, 0)
        assert [e.kind for e in seen[:2]] == [EventKind.CONNECTING, EventKind.CONNECTED]
        assert [e.command for e in seen[2:]] == STARTUP


@pytest.mark.parametrize("code,error", [
    ("10", tether.BackendDatabaseError),
    ("11", tether.BackendAccountError),
    ("12", tether.BackendStartError),
    ("99", tether.BackendStartError),
])
def test_spec12_2_start_codes_end_the_client_with_their_exception(
    fake_ffi: Path, root: Path, code: str, error: Type[tether.BackendStartError]
) -> None:
    root.mkdir()
    (root / "fake_start_code").write_text(code)
    (root / "fake_start_delay_ms").write_text("300")  # the request below waits for the start
    with inproc(fake_ffi, root) as c:
        waiting = c.submit("echo", {})
        with pytest.raises(error) as e:
            c.wait_connected(10 * SLOW)
        assert type(e.value) is error
        assert isinstance(e.value, tether.BackendStartError)
        assert isinstance(e.value, tether.ConnectionFailedError)
        seen: List[Any] = []
        wait_event(c, lambda ev: ev.kind == EventKind.CLOSED, seen=seen)
        disc = [ev for ev in seen if ev.kind == EventKind.DISCONNECTED]
        assert len(disc) == 1 and disc[0].retry_in_ms is None
        assert disc[0].status == error.STATUS and f"returned {code}" in disc[0].reason
        assert EventKind.CONNECTED not in [ev.kind for ev in seen]
        assert type(c.fatal) is error
        with pytest.raises(tether.ClientClosedError) as closed:
            waiting.result(5 * SLOW)
        # The library's reason, not only the status's name.
        assert f"returned {code}" in closed.value.message, closed.value.message


def test_a_second_client_on_the_same_root_is_refused_with_in_use(
    fake_ffi: Path, root: Path
) -> None:
    with started(fake_ffi, root) as first:
        with pytest.raises(tether.InUseError) as e:
            inproc(fake_ffi, root)
        assert e.value.status == Status.ERR_IN_USE
        assert isinstance(e.value, tether.UsageError)
        assert first.request("echo", {"still": "mine"}) == {"still": "mine"}


def test_pause_unpause_and_reconnect_do_not_apply_in_process(fake_ffi: Path, root: Path) -> None:
    with started(fake_ffi, root) as c:
        for call in (c.pause, c.unpause, c.reconnect_now):
            with pytest.raises(tether.UnsupportedError) as e:
                call()
            assert e.value.status == Status.ERR_UNSUPPORTED
            assert "in-process" in e.value.message
        assert c.request("echo", {"ok": 1}) == {"ok": 1}


def test_spec12_3_a_slow_app_never_stalls_the_backends_callback(
    fake_ffi: Path, root: Path
) -> None:
    """Library queue of 16, and the binding's reader takes at most 16 more before it stops
    too: while the app takes nothing for a second, 20 000 events wait in the library's
    hand-off channel instead of in the FFI's callback. Then every one arrives, in order."""
    n = 20000
    with started(fake_ffi, root, queue_capacity=16, event_queue_size=16, batch_size=16) as c:
        # submit: the reply may queue behind the events, which nothing takes for a second.
        emit = c.submit("emit", {"count": n, "command": "flood"})
        time.sleep(1.0)
        assert c.stats().queued_events <= 16 + 32  # the library's queue and the binding's
        seq = 0
        deadline = time.monotonic() + 30 * SLOW
        while seq < n:
            ev = c.next_event(max(0.0, deadline - time.monotonic()))
            assert ev is not None, f"only {seq} of {n} events arrived"
            assert ev.kind == EventKind.MESSAGE and ev.command == "flood", ev
            assert ev.data == {"seq": seq}
            seq += 1
        assert emit.result(10 * SLOW) == {"queued": n}
        stats = c.request("fake_stats")
        assert stats["emitted"] == n
        # Far below the second the app kept everything waiting.
        assert stats["max_callback_us"] < 250_000, stats


def test_close_ends_with_closed_and_frees_the_root_for_a_new_client(
    fake_ffi: Path, root: Path
) -> None:
    """A close answers the requests at once, waits for the call the backend still runs (the
    FFI cannot cancel it, up to 5 s), then DISCONNECTED (OK, no retry) and CLOSED; when
    close() returns, the root and the process's backend slot are free again."""
    c = started(fake_ffi, root)
    sent = c.stats().requests_sent
    asked = time.monotonic()
    pending = c.submit("sleep", {"ms": 1500})
    wait_until(lambda: c.stats().requests_sent > sent, "the sleep handed to the backend", 5)
    closer = threading.Thread(target=c.close)
    t0 = time.monotonic()
    closer.start()
    with pytest.raises(tether.ClientClosedError):
        pending.result(5 * SLOW)
    assert time.monotonic() - t0 < 1.0 * SLOW
    closer.join(10 * SLOW)
    assert not closer.is_alive()
    # The running sleep, not a lost CLOSED (from the request on: the test may be slow to close).
    assert time.monotonic() - asked >= 1.4
    seen = list(c.events(timeout=5 * SLOW))
    assert [e.kind for e in seen] == [EventKind.DISCONNECTED, EventKind.CLOSED]
    assert seen[0].status == Status.OK and seen[0].retry_in_ms is None
    assert c.closed and c.state == tether.ConnectionState.CLOSED
    with started(fake_ffi, root) as again:
        assert again.request("echo", {"second": "life"}) == {"second": "life"}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_does_not_keep_the_data_root_locked(fake_ffi: Path, root: Path) -> None:
    """A client in another process is refused the data root while one here holds it; a child
    forked without exec (multiprocessing's fork start method) does not hold it: once the
    client is closed, a new one opens the root while the child still lives."""
    other = (
        "import os, sys, tether\n"
        "try:\n"
        "    tether.Client(in_process=(os.environ['LIB'], os.environ['ROOT']))\n"
        "except tether.InUseError as e:\n"
        "    print(e)\n"
        "    sys.exit(3)\n"
    )
    r, w = os.pipe()
    with started(fake_ffi, root):
        run = run_python(other, timeout=60, LIB=str(fake_ffi), ROOT=str(root))
        assert run.returncode == 3 and "in use by another client" in run.stdout, run
        pid = os.fork()
        if pid == 0:  # the child: lives until the parent closes the pipe, touches no client
            os.close(w)
            os.read(r, 1)
            os._exit(0)
    try:
        with started(fake_ffi, root) as again:
            assert again.request("echo", {"child": "alive"}) == {"child": "alive"}
    finally:
        os.close(w)
        os.close(r)
        os.waitpid(pid, 0)


# -- media -------------------------------------------------------------------------------------


def test_spec12_2_upload_from_bytes_and_from_a_path_reports_progress(
    fake_ffi: Path, root: Path, tmp_path: Path
) -> None:
    with started(fake_ffi, root) as c:
        progress: List[float] = []
        content = c.upload({"filename": "hello.txt"}, b"hello", on_progress=progress.append)
        assert progress == [0.0, 50.0, 100.0]
        assert content == {"msgtype": "m.file", "url": "mxc://fake/5", "info": {"size": 5}}

        f = tmp_path / "photo.bin"
        f.write_bytes(b"x" * 12345)
        t = c.upload_media({"filename": "photo.bin"}, path=f)
        assert isinstance(t, tether.Transfer) and t.id > 0 and t.what == "upload_media"
        assert list(t) == [0.0, 50.0, 100.0]
        assert t.done() and t.result(0)["url"] == "mxc://fake/12345"

        # An empty upload is bytes too (not the path variant).
        assert c.upload({"filename": "empty"}, b"")["url"] == "mxc://fake/0"
        # The reports went to the transfers, not to the event stream.
        assert all(e.kind not in (EventKind.PROGRESS, EventKind.RESPONSE) for e in drain(c, 0))


def test_spec12_2_a_failing_upload_raises_the_backends_error(
    fake_ffi: Path, root: Path, tmp_path: Path
) -> None:
    with started(fake_ffi, root) as c:
        progress: List[float] = []
        with pytest.raises(tether.RemoteError) as e:
            c.upload({"filename": "x", "fail": True}, b"data", on_progress=progress.append)
        assert e.value.message == "upload failed" and progress == [0.0]
        missing = tmp_path / "missing.bin"
        with pytest.raises(tether.RemoteError, match="no such file or directory"):
            c.upload(path=missing)
        with pytest.raises(tether.InvalidArgumentError, match="not both"):
            c.upload_media({}, b"x", path=missing)
        with pytest.raises(tether.InvalidArgumentError, match="not both"):
            c.upload_media({"path": str(missing)}, b"x")
        with pytest.raises(tether.InvalidArgumentError, match="not both"):
            c.upload_media({"path": str(missing)}, path=missing)
        # Params as JSON bytes reach the library, which refuses the same.
        with pytest.raises(tether.InvalidArgumentError, match="not both"):
            c.upload_media(b'{"path": "/x"}', b"x")
        with pytest.raises(tether.InvalidArgumentError, match="data or a path"):
            c.upload_media({"filename": "nothing"})
        # An exception from the progress callback cancels the upload and propagates.
        def boom(p: float) -> None:
            raise KeyError("stop here")

        with pytest.raises(KeyError):
            c.upload({"filename": "x"}, b"data", on_progress=boom)
        # The upload's RESPONSE (cancelled, or its reply if that won) came before this one's.
        assert c.request("echo", {"ok": 1}) == {"ok": 1}
        assert c._core.pending == {}


def test_spec12_2_download_chunks_reassemble_the_file(fake_ffi: Path, root: Path) -> None:
    n = 200_000  # four chunks of at most 65536 bytes
    with started(fake_ffi, root) as c:
        buf = io.BytesIO()
        assert c.download("mxc://fake/200000", buf) == {"path": "/fake/200000", "size": n}
        assert buf.getvalue() == pattern(n)

        chunks: List[bytes] = []
        assert c.download({"mxc": "mxc://fake/70000"}, chunks.append)["size"] == 70000
        assert [len(x) for x in chunks] == [65536, 70000 - 65536]
        assert b"".join(chunks) == pattern(70000)

        # Two downloads at once keep their chunks apart.
        a, b = c.download_media("mxc://fake/150000"), c.download_media("mxc://fake/1000")
        assert b"".join(b) == pattern(1000) and b"".join(a) == pattern(150000)
        assert a.result(0)["path"] == "/fake/150000" and b.result(0)["size"] == 1000

        with pytest.raises(tether.RemoteError, match="invalid mxc URI"):
            c.download("https://example.org/x", io.BytesIO())
        got = io.BytesIO()
        with pytest.raises(tether.RemoteError, match="download failed"):
            c.download({"mxc": "mxc://fake/100000", "fail": True}, got)
        assert got.getvalue() == pattern(65536)  # the first chunk only
        assert all(e.kind != EventKind.CHUNK for e in drain(c, 0))


def test_spec12_2_a_stopped_stream_drops_its_chunks_and_still_gets_the_reply(
    fake_ffi: Path, root: Path
) -> None:
    with started(fake_ffi, root) as c:
        t = c.download_media("mxc://fake/300000")
        for chunk in t:
            assert chunk == pattern(len(chunk))
            break  # leaving the loop stops the stream
        assert t.result(10 * SLOW) == {"path": "/fake/300000", "size": 300000}
        assert list(t) == []
        assert not t._items


def test_callback_mode_hands_media_reports_to_the_transfer_not_to_on_event(
    fake_ffi: Path, root: Path
) -> None:
    kinds: List[Any] = []
    started_there: List[tether.Transfer] = []
    refused: List[BaseException] = []
    holder: List[Client] = []

    def on_event(ev: tether.Event) -> None:
        kinds.append(ev.kind)
        if ev.kind == EventKind.MESSAGE and ev.command == "go":
            c = holder[0]
            try:
                c.upload({"filename": "x"}, b"x")  # would wait on this very thread
            except tether.StateError as e:
                refused.append(e)
            started_there.append(c.upload_media({"filename": "cb"}, b"from the callback"))

    with Client(in_process=(fake_ffi, root), on_event=on_event) as c:
        holder.append(c)
        c.wait_connected(10 * SLOW)
        assert c.request("emit", {"count": 1, "command": "go"}) == {"queued": 1}
        deadline = time.monotonic() + 10 * SLOW
        while not started_there and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(refused) == 1 and "on_event" in str(refused[0])
        t = started_there[0]
        assert list(t) == [0.0, 50.0, 100.0]
        assert t.result(0)["url"] == "mxc://fake/17"
        chunks: List[bytes] = []
        assert c.download("mxc://fake/70000", chunks.append)["size"] == 70000
        assert b"".join(chunks) == pattern(70000)
        assert EventKind.PROGRESS not in kinds and EventKind.CHUNK not in kinds


def test_spec12_2_a_library_without_streaming_download_answers_unsupported(
    fake_ffi: Path, root: Path
) -> None:
    lib = fake_ffi.with_name("libfakegomuksffi-nodownload.so")
    with started(lib, root) as c:
        with pytest.raises(tether.UnsupportedError):
            c.download("mxc://fake/10", io.BytesIO())
        assert c.upload({"filename": "x"}, b"abc")["url"] == "mxc://fake/3"


def test_media_calls_over_the_websocket_are_unsupported(backend: Backend) -> None:
    with Client(backend.url, **gomuks_opts()) as c:
        with pytest.raises(tether.UnsupportedError) as e:
            c.upload_media({"filename": "x"}, b"x")
        assert e.value.status == Status.ERR_UNSUPPORTED
        with pytest.raises(tether.UnsupportedError):
            c.upload({"filename": "x"}, b"x")
        with pytest.raises(tether.UnsupportedError):
            c.download("mxc://example.org/abc", io.BytesIO())
        with pytest.raises(tether.UnsupportedError):
            c.download_media({"mxc": "mxc://example.org/abc"})
        assert c._core.pending == {}


# -- asyncio -----------------------------------------------------------------------------------


def test_async_client_starts_and_answers_in_process(fake_ffi: Path, root: Path) -> None:
    async def main() -> None:
        async with AsyncClient(in_process=(fake_ffi, root)) as c:
            await c.wait_connected(10 * SLOW)
            await await_event(c, lambda e: e.command == STARTUP[-1])
            assert await c.request("echo", {"a": 1}) == {"a": 1}
            with pytest.raises(tether.RemoteError, match='unknown command "nope"'):
                await c.request("nope")
            with pytest.raises(tether.RequestTimeoutError):
                await c.request("sleep", {"ms": 1000}, timeout=0.2)
            with pytest.raises(tether.UnsupportedError):
                c.pause()

    arun(main())


def test_async_transfers_iterate_progress_and_chunks_and_await_the_reply(
    fake_ffi: Path, root: Path
) -> None:
    async def main() -> None:
        async with AsyncClient(in_process=(fake_ffi, root)) as c:
            t = c.upload_media({"filename": "a"}, b"abcdef")
            assert isinstance(t, AsyncTransfer)
            assert [p async for p in t] == [0.0, 50.0, 100.0]
            assert (await t)["url"] == "mxc://fake/6"

            seen: List[float] = []

            async def on_progress(p: float) -> None:  # awaited
                seen.append(p)

            assert (await c.upload({"filename": "b"}, b"xy", on_progress=on_progress))["url"] \
                == "mxc://fake/2"
            assert seen == [0.0, 50.0, 100.0]
            with pytest.raises(tether.RemoteError, match="upload failed"):
                await c.upload({"fail": True}, b"xy")

            d = c.download_media("mxc://fake/140000")
            data = b"".join([chunk async for chunk in d])
            assert data == pattern(140000)
            assert await d == {"path": "/fake/140000", "size": 140000}
            buf = io.BytesIO()
            assert (await c.download("mxc://fake/5000", buf))["size"] == 5000
            assert buf.getvalue() == pattern(5000)

    arun(main())


def test_async_cancelling_the_awaiting_task_cancels_the_transfer(
    fake_ffi: Path, root: Path
) -> None:
    """The upload's reply waits behind a flood the app does not take; cancelling the task
    that awaits it cancels the request, whose RESPONSE is then CANCELLED (the backend's own
    reply, later, is dropped)."""
    n = 3000

    async def main() -> None:
        async with AsyncClient(in_process=(fake_ffi, root), queue_capacity=16,
                               event_queue_size=16, batch_size=16) as c:
            await await_event(c, lambda e: e.command == STARTUP[-1])
            flood = asyncio.ensure_future(c.request("emit", {"count": n, "command": "flood"}))
            await asyncio.sleep(0.3)  # the queues fill up: the client stops reading
            cancels: List[int] = []
            real = c._core.cancel

            def spy(rid: int) -> None:
                cancels.append(rid)
                real(rid)

            c._core.cancel = spy  # type: ignore[assignment,method-assign]
            t = c.upload_media({"filename": "z"}, b"z")
            waiting = asyncio.ensure_future(t.result())
            await asyncio.sleep(0.1)
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert cancels == [t.id]
            for seq in range(n):
                ev = await c.next_event(10 * SLOW)
                assert ev is not None and ev.command == "flood" and ev.data == {"seq": seq}
            assert await flood == {"queued": n}
            with pytest.raises(tether.RequestCancelledError):
                await t
            assert [p async for p in t] == []  # its progress reports were dropped

    arun(main())
