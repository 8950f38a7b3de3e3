"""examples/python/store_tui.py, the curses client on the store, driven in tmux against a
tether-backend seeded with 6 rooms: keystrokes in, ``tmux capture-pane -p`` out.

Set STORE_TUI_SCREEN=/path/to/file to keep the last captured screen (the README's
examples/python/store_tui_screen.txt is one)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterator

import pytest

import tether
from tether import EventKind

from conftest import REPO, SLOW, Backend, gomuks_opts, python_env, wait_event

EXAMPLE = REPO / "examples" / "python" / "store_tui.py"
R5 = "!r5:example.org"

pytestmark = pytest.mark.skipif(
    shutil.which("tmux") is None,
    reason="tmux is not installed (Debian/Ubuntu: apt-get install tmux); the store_tui "
    "example is driven through a tmux pane",
)


class Pane:
    """One tmux session on a private server socket, running one command."""

    def __init__(self, command: str, tmp: Path, width: int = 110, height: int = 30) -> None:
        self.err = str(tmp / "store_tui.err")
        # A server of its own, its socket in the test's directory (nothing left behind).
        self.socket = str(tmp / "tmux.sock")
        self.tmux("new-session", "-d", "-s", "tui", "-x", str(width), "-y", str(height), command)

    def tmux(self, *args: str) -> str:
        r = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True,
                           timeout=10 * SLOW)
        if r.returncode != 0:
            raise RuntimeError(f"tmux {args[0]} failed: {r.stderr.strip()}")
        return r.stdout

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "tui", *keys)

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "tui", "-l", text)

    def capture(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "tui")

    def alive(self) -> bool:
        try:
            self.tmux("has-session", "-t", "tui")
            return True
        except RuntimeError:
            return False

    def wait(self, pred: Callable[[str], bool], what: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout * SLOW
        screen = ""
        while time.monotonic() < deadline:
            try:
                screen = self.capture()
            except RuntimeError:
                break  # the session ended (the program exited)
            if pred(screen):
                return screen
            time.sleep(0.05)
        try:
            with open(self.err) as f:
                stderr = f.read()
        except OSError:
            stderr = ""
        pytest.fail(f"the screen never showed {what}; last screen:\n{screen}\nstderr:\n{stderr}")

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)
        try:
            os.unlink(self.socket)
        except OSError:
            pass


def room_names(screen: str) -> list:
    """The room list's lines (left of the separator), whitespace collapsed."""
    return [" ".join(ln.split("│")[0].split()) for ln in screen.splitlines()[1:8]]


def lsan_options(options: str, tmp: Path) -> str:
    """LSAN_OPTIONS for the example under the sanitizer run (tests/sanitizers/python.sh):
    its suppressions plus ncurses', which keeps its terminal description for the life of
    the process by design (the leaks it reports at exit are libtinfo's alone)."""
    parts = options.split(":")
    for i, part in enumerate(parts):
        if part.startswith("suppressions="):
            own = Path(part.split("=", 1)[1]).read_text()
            supp = tmp / "lsan-with-ncurses.supp"
            supp.write_text(own + "\nleak:libtinfo\nleak:libncurses\n")
            parts[i] = f"suppressions={supp}"
    return ":".join(parts)


@pytest.fixture
def pane_for(
    make_backend: Callable[..., Backend], tmp_path: Path
) -> Iterator[Callable[[], "tuple[Pane, Backend]"]]:
    panes = []

    def start() -> "tuple[Pane, Backend]":
        backend = make_backend("--rooms", "6", "--history", "60")
        env = python_env()["env"]
        keep = {k: env[k] for k in ("PYTHONPATH", "TETHER_LIBRARY", "LD_PRELOAD",
                                    "PYTHONMALLOC", "ASAN_OPTIONS", "LSAN_OPTIONS")
                if env.get(k)}
        if "LSAN_OPTIONS" in keep:
            keep["LSAN_OPTIONS"] = lsan_options(keep["LSAN_OPTIONS"], tmp_path)
        keep["TETHER_USER"], keep["TETHER_PASSWORD"] = "tether", "tether-password"
        # The program's stderr goes to a file: a traceback is then in the failure message.
        tmp = tmp_path / f"pane{len(panes)}"
        tmp.mkdir()
        err = str(tmp / "store_tui.err")
        # -u LINES -u COLUMNS: under pytest they hold 24 and 80, which curses would believe
        # instead of the pane's size.
        cmd = " ".join(
            ["env", "-u", "LINES", "-u", "COLUMNS", *(shlex.quote(f"{k}={v}") for k, v in keep.items()),
             shlex.quote(sys.executable), shlex.quote(str(EXAMPLE)), shlex.quote(backend.url),
             "2>" + shlex.quote(err)]
        )
        p = Pane(cmd, tmp)
        panes.append(p)
        return p, backend

    yield start
    for p in panes:
        p.kill()


def test_the_tui_lists_rooms_opens_one_pages_back_and_sends(pane_for: Callable[[], "tuple[Pane, Backend]"]) -> None:
    """store_tui.py in tmux: the room list shows the room names (invite, favourite marker,
    unread count); Enter shows the invite, then Down Down Enter opens "Room 5" with its
    newest history (the invite was never opened in the store, so nothing closes it); PageUp pages
    back to the room's first message; a typed message sent with Enter appears (and loses
    its "(sending)" mark once synced), and a second client sees it; q quits."""
    pane, backend = pane_for()
    screen = pane.wait(lambda s: "Room 0" in s and "Invite room" in s, "the room list")
    lines = screen.splitlines()
    assert room_names(screen) == ["+Invite room invite", "*Room 3", "Room 5", "Room 4",
                                  "Room 2 3", "Room 1", "Room 0"], screen
    assert "connected" in lines[0]

    # The invite (selected first) shows who invited; moving on from it opens the next room.
    pane.keys("Enter")
    pane.wait(lambda s: "An invite from" in s, "the invite")
    pane.keys("Down", "Down", "Enter")
    screen = pane.wait(lambda s: "alice: Message 58 in Room 5" in s and "bob: Message 59" in s,
                       "the newest messages of Room 5")
    assert "Room 5  (PgUp: older)" in screen

    for _ in range(10):
        if "Message 0 in Room 5" in pane.capture():
            break
        pane.keys("PPage")
        time.sleep(0.3 * SLOW)
    screen = pane.wait(lambda s: "alice: Message 0 in Room 5" in s, "the room's first message")
    assert "(start of the room)" in screen and "Message 59" not in screen
    for _ in range(4):
        pane.keys("NPage")
    pane.wait(lambda s: "Message 59 in Room 5" in s, "the newest messages again")

    pane.type("hello from tmux")
    pane.wait(lambda s: "> hello from tmux" in s, "the compose line")
    pane.keys("Enter")
    screen = pane.wait(lambda s: "me: hello from tmux" in s and "(sending)" not in s,
                       "the sent message, synced")
    if os.environ.get("STORE_TUI_SCREEN"):
        with open(os.environ["STORE_TUI_SCREEN"], "w") as f:
            f.write(screen)
    assert screen.rstrip().splitlines()[-1].strip() == ">"  # the compose line is empty again

    with tether.Client(backend.url, store=True, **gomuks_opts()) as other:
        wait_event(other, lambda e: e.kind == EventKind.MESSAGE and e.command == "init_complete")
        preview = other.store.room(R5)["entry"]["preview"]
        assert preview["content"]["body"] == "hello from tmux"
        assert preview["sender"] == "@me:example.org"

    pane.keys("Escape")
    pane.keys("q")
    deadline = time.monotonic() + 10 * SLOW
    while pane.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pane.alive(), "q did not quit"


def test_the_tui_shows_a_remote_message_in_the_open_room(pane_for: Callable[[], "tuple[Pane, Backend]"]) -> None:
    """With Room 1 open, a message from Bob (HTTP control) appears at the bottom of its
    timeline, and Room 1 moves up the list (its activity is now the newest)."""
    pane, backend = pane_for()
    pane.wait(lambda s: "Room 0" in s, "the room list")
    for _ in range(5):
        pane.keys("Down")
    pane.keys("Enter")
    pane.wait(lambda s: "Message 59 in Room 1" in s, "Room 1's history")
    q = urllib.parse.urlencode({"room": "!r1:example.org", "sender": "@bob:example.org",
                                "body": "a remote hello"})
    backend.control(f"/_testkit/rooms/message?{q}")
    screen = pane.wait(lambda s: "bob: a remote hello" in s, "the remote message")
    names = room_names(screen)
    assert names[2].startswith("Room 1"), screen  # after the invite and the favourite
    pane.keys("C-c")
    deadline = time.monotonic() + 10 * SLOW
    while pane.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pane.alive(), "Ctrl-C did not quit"
