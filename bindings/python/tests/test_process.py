"""Process-level behaviour, each in a fresh interpreter: exiting with open clients, and use
after fork()."""

from __future__ import annotations

import re
import textwrap
import time
from typing import Any

import pytest

from conftest import SLOW, run_python, start_python

PRELUDE = """
import asyncio, os, sys, threading, time
import tether
from tether.aio import AsyncClient
URL = sys.argv[1] if len(sys.argv) > 1 else os.environ["URL"]
OPTS = dict(username="tether", password="tether-password")
def ready():
    print("READY", flush=True)
"""

EXIT_CASES = {
    # An open poll-mode client, events queued and unread, a request pending in a thread.
    "poll": """
        c = tether.Client(URL, **OPTS)
        c.wait_connected(10)
        def pending():
            try:
                c.request("sleep", {"ms": 10000})
            except tether.ClientClosedError:
                print("PENDING-FAILED", flush=True)  # closed at exit: the documented outcome
        threading.Thread(target=pending, daemon=True).start()
        time.sleep(0.2)
        ready()
    """,
    # Callbacks running Python code (slowly) while the interpreter exits.
    "callback": """
        def on_event(ev):
            time.sleep(0.002)
        c = tether.Client(URL, on_event=on_event, **OPTS)
        c.wait_connected(10)
        import urllib.request
        urllib.request.urlopen(urllib.request.Request(URL + "/_testkit/push?n=500", method="POST", data=b""))
        time.sleep(0.1)
        ready()
    """,
    # An AsyncClient never closed; asyncio.run() closed its loop.
    "asyncio": """
        async def main():
            c = AsyncClient(URL, **OPTS)
            await c.wait_connected(10)
            return c
        keep = asyncio.run(main())
        ready()
    """,
    # Several clients of both kinds, one of them already closed by the library.
    "mixed": """
        a = tether.Client(URL, **OPTS)
        b = tether.Client(URL, username="tether", password="wrong")
        d = tether.Client(URL, protocol="rwws", token="dGV0aGVyLXRlc3Qta2V5")
        a.wait_connected(10); d.wait_connected(10)
        ready()
    """,
}


@pytest.mark.parametrize("case", sorted(EXIT_CASES))
def test_the_interpreter_exits_cleanly_with_open_clients(make_backend: Any, case: str) -> None:
    b = make_backend("--conn-queue-limit", "0")
    code = PRELUDE + textwrap.dedent(EXIT_CASES[case])
    t0 = time.monotonic()
    r = run_python(code, timeout=30, URL=b.url)
    elapsed = time.monotonic() - t0
    assert r.returncode == 0, f"exit status {r.returncode}\n{r.stderr}"
    assert "READY" in r.stdout, r.stderr
    assert "Traceback" not in r.stderr and "Fatal" not in r.stderr, r.stderr
    assert elapsed < 10 * SLOW, f"took {elapsed:.1f} s to exit"
    # atexit closed the gomuks connections gracefully, not by dropping them, and with 1000:
    # the app did not ask to be forgotten, so the resume point stays usable (§7.1).
    stats = b.wait_stats(lambda s: s["connections"] == 0)
    assert stats["last_client_close_code"] == 1000, stats


def test_exit_waits_once_for_all_clients_when_the_server_is_silent(make_backend: Any) -> None:
    """At exit every open client is closed first and then all are awaited against one
    deadline: 20 clients of a stopped server cost one deadline, not 20."""
    import tether._base

    deadline = tether._base.AT_EXIT_TIMEOUT_S
    b = make_backend("--conn-queue-limit", "0")
    code = PRELUDE + textwrap.dedent(
        """
        clients = [tether.Client(URL, **OPTS) for _ in range(20)]
        for c in clients:
            c.wait_connected(10)
        ready()
        sys.stdin.readline()  # the test stops the backend, then lets us exit
        """
    )
    p = start_python(code, URL=b.url)
    stopped = False
    try:
        assert p.stdout is not None and p.stdin is not None
        line = p.stdout.readline()
        assert line.strip() == "READY", line + p.communicate(timeout=30)[1]
        b.freeze()
        stopped = True
        t0 = time.monotonic()
        p.stdin.write("\n")
        p.stdin.flush()
        _, err = p.communicate(timeout=120 * SLOW)
        elapsed = time.monotonic() - t0
    finally:
        if stopped:
            b.thaw()
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, f"exit status {p.returncode}\n{err}"
    assert "Traceback" not in err and "Fatal" not in err, err
    assert elapsed < 2 * deadline * SLOW, f"exit took {elapsed:.1f} s with 20 clients\n{err}"


FORK = PRELUDE + """
import logging
logging.basicConfig(level=logging.DEBUG, format="%(name)s [%(tether_client)s] %(message)s")
c = tether.Client(URL, **OPTS)
c.wait_connected(10)
pid = os.fork()
if pid == 0:
    # A hang in the child is a lock the fork copied while held: faulthandler writes the
    # stack to the descriptor itself (no lock of sys.stderr) and exits, so the test says
    # where instead of timing out with nothing.
    import faulthandler
    faulthandler.dump_traceback_later(20, exit=True)
    failures = []
    def expect_forked(what, fn):
        try:
            fn()
            failures.append(what + ": no error")
        except tether.ForkedError as e:
            if "fork" not in str(e):
                failures.append(what + ": unclear message " + str(e))
        except BaseException as e:
            failures.append(what + ": " + repr(e))
    expect_forked("request", lambda: c.request("echo", {}))
    expect_forked("submit", lambda: c.submit("echo", {}))
    expect_forked("resume_state", c.resume_state)
    expect_forked("stats", c.stats)
    expect_forked("state", lambda: c.state)
    expect_forked("next_event", lambda: c.next_event(0))
    expect_forked("close", c.close)
    expect_forked("new client", lambda: tether.Client(URL, **OPTS))
    logging.getLogger("tether.child").info("the child logs as usual", extra={"tether_client": 0})
    print("CHILD", failures, flush=True)
    faulthandler.cancel_dump_traceback_later()
    sys.exit(1 if failures else 0)  # a normal exit: atexit and finalizers run in the child
_, status = os.waitpid(pid, 0)
print("CHILD-EXIT", os.waitstatus_to_exitcode(status), flush=True)
# The parent's client is unaffected.
print("PARENT", c.request("echo", {"after": "fork"}), flush=True)
c.close()
"""


def test_use_after_fork_raises_forked_error(backend: Any) -> None:
    r = run_python(FORK, timeout=30, URL=backend.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CHILD []" in r.stdout, r.stdout + r.stderr
    assert "CHILD-EXIT 0" in r.stdout, r.stdout + r.stderr
    assert "PARENT {'after': 'fork'}" in r.stdout, r.stdout + r.stderr
    # The parent's log records still flow after the fork, up to its close at the end.
    assert "tether.child [0] the child logs as usual" in r.stderr, r.stderr
    assert re.search(r"tether.session \[[1-9][0-9]*\] client closed", r.stderr), r.stderr


FORK_BEFORE_ANY_CLIENT = PRELUDE + """
import logging
logging.basicConfig(level=logging.DEBUG, format="%(name)s [%(tether_client)s] %(message)s")
# A constructor that fails in the library before the fork: the process made no client.
try:
    tether.Client("ftp://nowhere", **OPTS)
except tether.ConfigError:
    pass
pid = os.fork()
if pid == 0:
    import faulthandler
    faulthandler.dump_traceback_later(20, exit=True)
    c = tether.Client(URL, **OPTS)
    print("CHILD", c.request("echo", {"in": "child"}), flush=True)
    # Left open: the child's exit closes its own clients, as any process's.
    faulthandler.cancel_dump_traceback_later()
    sys.exit(0)
_, status = os.waitpid(pid, 0)
print("CHILD-EXIT", os.waitstatus_to_exitcode(status), flush=True)
"""


def test_a_child_forked_before_any_client_uses_its_own(backend: Any) -> None:
    """The library works in a child forked before the process made a client (the header's
    fork rule): the child's clients are its own, its log records flow, and its exit closes
    them."""
    r = run_python(FORK_BEFORE_ANY_CLIENT, timeout=30, URL=backend.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CHILD {'in': 'child'}" in r.stdout, r.stdout + r.stderr
    assert "CHILD-EXIT 0" in r.stdout, r.stdout + r.stderr
    # The child's records reach logging (the parent installed the callback before the fork),
    # up to the close its exit makes.
    assert re.search(r"tether.session \[[1-9][0-9]*\] client closed", r.stderr), r.stderr


FORK_MID_RECORD = PRELUDE + """
import logging
# Stands in for the lock of sys.stderr's buffer, which a fork does not reset either.
held = threading.Lock()
inside, forked = threading.Event(), threading.Event()
class Slow(logging.Handler):
    armed = True
    def emit(self, record):
        # The library's records only; holds the lock until the fork, or for 1 s (less than
        # the fork's wait, so a fork that waits finds it free).
        if self.armed and record.pathname == "(tether)":
            self.armed = False
            with held:
                inside.set()
                forked.wait(1)
lg = logging.getLogger("tether")
lg.setLevel(logging.DEBUG)
lg.addHandler(Slow())
c = tether.Client(URL, **OPTS)
assert inside.wait(10), "no record reached the handler"
pid = os.fork()
if pid == 0:
    os._exit(0 if held.acquire(blocking=False) else 3)
forked.set()
_, status = os.waitpid(pid, 0)
print("CHILD-EXIT", os.waitstatus_to_exitcode(status), flush=True)
c.close()
"""


def test_a_fork_waits_for_the_record_being_handled(backend: Any) -> None:
    # Forked while the tether-log thread is inside a handler, the child would inherit what
    # the handler holds (sys.stderr's buffer lock, say) held for good by a thread it does not
    # have, and hang at its first write. The fork waits for the record instead.
    r = run_python(FORK_MID_RECORD, timeout=30, URL=backend.url)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "CHILD-EXIT 0" in r.stdout, r.stdout + r.stderr


FORK_STORE = PRELUDE + """
c = tether.Client(URL, store=True, **OPTS)
c.wait_connected(10)
store = c.store
# A store call in flight while another thread forks (here held open on purpose; in an app,
# any read that is running at that moment).
entered, gate = threading.Event(), threading.Event()
busy = threading.Thread(target=store._handle.call, args=(lambda ptr: (entered.set(), gate.wait()),))
busy.start()
entered.wait()
pid = os.fork()
if pid == 0:
    failures = []
    for what, fn in (("read", store.session), ("close", store.close)):
        try:
            fn()
            failures.append(what + ": no error")
        except tether.ForkedError:
            pass
        except BaseException as e:
            failures.append(what + ": " + repr(e))
    print("CHILD", failures, flush=True)
    sys.exit(1 if failures else 0)  # a normal exit: the store's finaliser runs in the child
gate.set()
busy.join()
deadline = time.monotonic() + 10
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("CHILD-EXIT", os.waitstatus_to_exitcode(status), flush=True)
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("CHILD-HUNG", flush=True)
        break
    time.sleep(0.05)
print("PARENT", isinstance(store.session()["gen"], int), flush=True)
store.close()
c.close()
"""


def test_a_forked_child_exits_although_a_store_call_was_in_flight(backend: Any) -> None:
    """A child forked while another thread was inside a store call refuses the store with
    ForkedError, and exits: its finaliser does not wait for a call that will never return
    there. The parent's store goes on."""
    r = run_python(FORK_STORE, timeout=30, URL=backend.url)
    assert "CHILD []" in r.stdout, r.stdout + r.stderr
    assert "CHILD-EXIT 0" in r.stdout, r.stdout + r.stderr
    assert "PARENT True" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def backend() -> Any:
    from conftest import Backend

    b = Backend()
    yield b
    b.stop()
