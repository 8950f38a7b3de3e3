"""Fixtures: a real ``tether-backend`` process per test module, its HTTP control endpoints,
and event helpers with deadlines. Nothing is mocked; every wait is bounded."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

HERE = Path(__file__).resolve().parent


def repo_root() -> Path:
    env = os.environ.get("TETHER_SOURCE_DIR")
    if env:
        return Path(env).resolve()
    for d in HERE.parents:
        cargo = d / "Cargo.toml"
        if cargo.is_file() and re.search(r"(?m)^\[workspace\]", cargo.read_text()):
            return d
    raise RuntimeError("cannot find the repository root above " + str(HERE))


REPO = repo_root()
HEADER = REPO / "include" / "tether.h"
USER, PASSWORD = "tether", "tether-password"
RWWS_KEY = "dGV0aGVyLXRlc3Qta2V5"  # base64("tether-test-key"), the backend's default key

#: Deadlines scale with TETHER_TEST_SLOW (e.g. under a debugger or a loaded machine).
SLOW = 5.0 if os.environ.get("TETHER_TEST_SLOW", "0") not in ("", "0") else 1.0


def backend_path() -> str:
    env = os.environ.get("TETHER_BACKEND")
    if env:
        return env
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return str(target / "debug" / "tether-backend")


def _stopped(stat: str) -> bool:
    """Whether the thread whose /proc stat file is ``stat`` is stopped (or gone)."""
    try:
        with open(stat) as f:
            # The state follows the command name, which is in parentheses.
            return f.read().rsplit(") ", 1)[1].startswith("T")
    except (OSError, IndexError):
        return True


class Backend:
    """A running ``tether-backend`` on 127.0.0.1 and its ``/_testkit`` control endpoints."""

    def __init__(self, *args: str) -> None:
        path = backend_path()
        if not os.path.exists(path):
            raise RuntimeError(
                f"{path} does not exist: build it with "
                "`cargo build -p tether-testkit --bin tether-backend` or set TETHER_BACKEND"
            )
        self.proc = subprocess.Popen(
            [path, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        line = self._first_line(20 * SLOW)
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"unexpected backend start line: {line!r}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def _first_line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                self.stop()
                raise RuntimeError("tether-backend did not start in time")
            chunk = os.read(self.proc.stdout.fileno(), 256)
            if not chunk:
                self.stop()
                raise RuntimeError("tether-backend exited before starting")
            buf += chunk
        sel.close()
        return buf.decode()

    def control(self, path: str, method: str = "POST") -> Any:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=10 * SLOW) as r:
            assert r.status == 200
            return json.loads(r.read() or b"null")

    def push(self, n: int) -> int:
        """Pushes ``n`` generated events; returns the newest (most negative) id."""
        return int(self.control(f"/_testkit/push?n={n}")["newest_id"])

    def stats(self) -> Dict[str, Any]:
        return self.control("/_testkit/stats", "GET")

    def rwws_stats(self) -> Dict[str, Any]:
        return self.control("/_testkit/rwws/stats", "GET")

    def cut(self) -> None:
        self.control("/_testkit/cut")

    def close_all(self, code: int, reason: str = "") -> None:
        self.control(f"/_testkit/close?code={code}&reason={urllib.parse.quote(reason)}")

    def fault(self, kind: str) -> None:
        self.control(f"/_testkit/fault?kind={kind}")

    def wait_stats(self, pred: Callable[[Dict[str, Any]], bool], timeout: float = 10.0,
                   rwws: bool = False) -> Dict[str, Any]:
        """Polls the stats endpoint (test-side only) until ``pred`` holds."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            s = self.rwws_stats() if rwws else self.stats()
            if pred(s):
                return s
            if time.monotonic() > deadline:
                pytest.fail(f"backend stats never matched: {s}")
            time.sleep(0.02)

    def freeze(self) -> None:
        """SIGSTOP: the kernel still accepts connections, nothing answers. Returns once every
        thread has stopped: kill() returns earlier, and a reply could still slip out."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        tasks = f"/proc/{self.proc.pid}/task"
        deadline = time.monotonic() + 5 * SLOW
        while not all(_stopped(f"{tasks}/{t}/stat") for t in os.listdir(tasks)):
            if time.monotonic() > deadline:
                raise RuntimeError("tether-backend did not stop")
            time.sleep(0.001)

    def thaw(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    """One backend per test module (tests in a module run one after the other)."""
    b = Backend("--conn-queue-limit", "0")
    yield b
    b.stop()


@pytest.fixture
def make_backend() -> Iterator[Callable[..., Backend]]:
    """A backend started with extra flags for one test."""
    started: List[Backend] = []

    def make(*args: str) -> Backend:
        b = Backend(*args)
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def gomuks_opts(**extra: Any) -> Dict[str, Any]:
    """The testkit's credentials and fast reconnects."""
    opts: Dict[str, Any] = dict(username=USER, password=PASSWORD, reconnect_backoff=(0.02, 0.2))
    opts.update(extra)
    return opts


def wait_until(pred: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Polls ``pred`` until it holds; fails after ``timeout`` s (scaled) naming ``what``."""
    deadline = time.monotonic() + timeout * SLOW
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_event(client: Any, pred: Callable[[Any], bool], timeout: float = 10.0,
               seen: Optional[List[Any]] = None) -> Any:
    """Takes events from a sync client until ``pred(event)``; fails after ``timeout`` s."""
    deadline = time.monotonic() + timeout * SLOW
    log: List[Any] = [] if seen is None else seen
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no matching event within {timeout} s; saw: {log[-20:]}")
        ev = client.next_event(left)
        if ev is None:
            if client.closed:
                pytest.fail(f"client ended before a matching event; saw: {log[-20:]}")
            continue
        log.append(ev)
        if pred(ev):
            return ev


async def await_event(client: Any, pred: Callable[[Any], bool], timeout: float = 10.0,
                      seen: Optional[List[Any]] = None) -> Any:
    """``wait_event`` for an AsyncClient."""
    loop_time = time.monotonic
    deadline = loop_time() + timeout * SLOW
    log: List[Any] = [] if seen is None else seen
    while True:
        left = deadline - loop_time()
        if left <= 0:
            pytest.fail(f"no matching event within {timeout} s; saw: {log[-20:]}")
        ev = await client.next_event(left)
        if ev is None:
            if client.closed:
                pytest.fail(f"client ended before a matching event; saw: {log[-20:]}")
            continue
        log.append(ev)
        if pred(ev):
            return ev


def foreign_env() -> Dict[str, str]:
    """The environment for a third-party program a test starts (tinyproxy, openssl): without
    the sanitizer runs' ``LD_PRELOAD``, which would make LeakSanitizer judge that program's
    own leaks instead of libtether's."""
    return {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}


def python_env(**env: str) -> Dict[str, Any]:
    """``subprocess`` arguments for a fresh interpreter with the same ``tether`` import path."""
    import tether

    pkg_parent = str(Path(tether.__file__).resolve().parent.parent)
    e = dict(os.environ)
    e["PYTHONPATH"] = pkg_parent + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env)
    # A neutral working directory: `-c` puts it first on sys.path, and the package sources
    # next to the tests must not shadow the installed package.
    return dict(env=e, cwd=tempfile.gettempdir())


def run_python(code: str, timeout: float = 30.0, **env: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter with the same ``tether`` import path."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout * SLOW,
        **python_env(**env),
    )


def start_python(code: str, **env: str) -> subprocess.Popen:
    """Starts ``code`` in a fresh interpreter (pipes for stdin, stdout and stderr)."""
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **python_env(**env),
    )


def pytest_report_header(config: Any) -> List[str]:
    import tether

    return [
        f"tether package: {Path(tether.__file__).parent}",
        f"tether library: {tether.library_path()} ({tether.library_version()})",
        f"tether-backend: {backend_path()}",
    ]
