#!/usr/bin/env python3
"""store_tui: a small terminal chat client (curses) on tether's native gomuks store.

The room list (unread counts, favourites, invites) is on the left, the open room's timeline
on the right, a compose line at the bottom. Everything shown is read from the store
(``Client(..., store=True)``); the store's change sets (STORE events, taken from the client's
events like any other) say when to redraw. Sending uses the store's local echo: a message
shows dim, marked "(sending)", until the backend syncs it.

    tether-backend --rooms 6 &                      # prints its address
    python3 store_tui.py http://127.0.0.1:PORT [user] [password]

or with the environment: TETHER_URL, TETHER_USER and TETHER_PASSWORD, or TETHER_TOKEN (a
gomuks_auth token instead of the password). Defaults: the testkit's "tether" /
"tether-password".

Keys: Up/Down select a room; Enter opens it (and marks it read); PageUp shows older
history, loading it from the backend when the store has no more (PageDown goes back);
typing writes into the compose line of the open room and Enter sends; Esc leaves the
compose line; q (outside the compose line) or Ctrl-C quits.
"""

from __future__ import annotations

import curses
import os
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import tether
from tether import EventKind

LIST_WIDTH = 30


class Args:
    """Where to connect: the command line first, then the environment."""

    def __init__(self, argv: List[str]) -> None:
        env = os.environ
        self.url: Optional[str] = argv[1] if len(argv) > 1 else env.get("TETHER_URL")
        self.user = argv[2] if len(argv) > 2 else env.get("TETHER_USER", "tether")
        self.password = argv[3] if len(argv) > 3 else env.get("TETHER_PASSWORD", "tether-password")
        self.token = env.get("TETHER_TOKEN")

    def options(self) -> Dict[str, Any]:
        if self.token:
            return {"token": self.token}
        return {"username": self.user, "password": self.password}


def localpart(user_id: str) -> str:
    return user_id[1:].split(":", 1)[0] if user_id.startswith("@") else user_id


class App:
    """The screen's state; every draw reads the store afresh."""

    def __init__(self, scr: Any, client: tether.Client) -> None:
        self.scr = scr
        self.client = client
        self.store = client.store
        self.rooms: List[Dict[str, Any]] = []
        self.selected = 0
        self.open: Optional[str] = None
        # The room the store was told is open (not an invite, which the store cannot open).
        self.opened: Optional[str] = None
        self.compose = ""
        self.composing = False
        self.scroll = 0  # timeline rows scrolled up from the newest
        self.status = "connecting"
        self.note = ""
        self.dirty = True

    # -- events ----------------------------------------------------------------------------

    def take_events(self, wait: float) -> bool:
        """Takes what the client delivered (waiting up to ``wait`` seconds for the first);
        returns False after CLOSED."""
        ev = self.client.next_event(wait)
        while ev is not None:
            if ev.kind == EventKind.STORE:
                self.dirty = True
            elif ev.kind == EventKind.CONNECTED:
                self.status, self.dirty = "connected", True
            elif ev.kind == EventKind.DISCONNECTED:
                self.status, self.dirty = f"disconnected ({ev.reason or ev.status})", True
            elif ev.kind == EventKind.CLOSED:
                return False
            ev = self.client.next_event(0)
        return True

    # -- keys ------------------------------------------------------------------------------

    def key(self, k: Any) -> bool:
        """Handles one key; returns False to quit."""
        self.dirty = True
        if k in (curses.KEY_UP, curses.KEY_DOWN):
            step = -1 if k == curses.KEY_UP else 1
            self.selected = max(0, min(len(self.rooms) - 1, self.selected + step))
        elif k == curses.KEY_PPAGE:
            self.older()
        elif k == curses.KEY_NPAGE:
            self.scroll = max(0, self.scroll - self.page())
        elif k in ("\n", "\r", curses.KEY_ENTER):
            if self.composing and self.compose.strip():
                self.send()
            elif self.rooms:
                self.open_room(self.rooms[self.selected]["room_id"])
        elif k == "\x1b":
            self.composing = False
        elif k in (curses.KEY_BACKSPACE, "\x7f", "\b"):
            self.compose = self.compose[:-1]
        elif isinstance(k, str) and k.isprintable():
            if not self.composing and k == "q":
                return False
            if self.open is not None:
                self.composing = True
                self.compose += k
        return True

    def page(self) -> int:
        """Timeline rows on screen (all lines but the status, header and compose lines)."""
        return max(1, self.scr.getmaxyx()[0] - 3)

    def open_room(self, room_id: str) -> None:
        store = self.store
        if self.opened and self.opened != room_id:
            store.close_room(self.opened)
            self.opened = None
        self.open, self.scroll, self.note = room_id, 0, ""
        info = store.room(room_id)
        if info is None or "invite" in info:
            self.composing = False
            return
        store.open_room(room_id)
        self.opened = room_id
        self.composing = True
        if not store.timeline(room_id, limit=1)["events"]:
            self.paginate()
        try:
            store.mark_read(room_id)  # the counts change with the backend's next sync
        except tether.InvalidArgumentError:
            pass  # no event of the room to mark yet

    def paginate(self) -> None:
        if self.open is None:
            return
        try:
            self.store.paginate(self.open)  # not waited for: its change set redraws
        except tether.InUseError:
            pass  # one is running already
        except tether.TetherError as e:
            self.note = f"cannot load history: {e}"

    def older(self) -> None:
        info = None if self.open is None else self.store.room(self.open)
        if info is None or "invite" in info:
            return
        rows = self.page()
        tl = self.store.timeline(self.open, limit=self.scroll + 2 * rows)
        held = len(tl["events"]) + len(tl["pending"])
        if held < self.scroll + 2 * rows and tl["has_more"]:
            self.paginate()  # the rows arrive with a change set; PageUp again shows them
        self.scroll = min(self.scroll + rows, max(0, held - rows))

    def send(self) -> None:
        text, self.compose = self.compose.strip(), ""
        try:
            self.store.send_message(self.open, text)  # the echo shows once it is in the store
        except tether.TetherError as e:
            self.note = f"not sent: {e}"
        self.scroll = 0

    # -- drawing ---------------------------------------------------------------------------

    def put(self, y: int, x: int, text: str, width: int, attr: int = 0) -> None:
        if width <= 0:
            return
        try:
            self.scr.addnstr(y, x, text.ljust(width), width, attr)
        except curses.error:
            pass  # the bottom-right cell

    def draw(self) -> None:
        scr, store = self.scr, self.store
        h, w = scr.getmaxyx()
        scr.erase()
        listing = store.room_list()
        self.rooms = listing["rooms"]
        self.selected = min(self.selected, max(0, len(self.rooms) - 1))
        lw = min(LIST_WIDTH, max(12, w // 3))
        unread = sum(r["unread_messages"] for r in self.rooms)
        self.put(0, 0, f" tether store · {self.status} · {listing['total']} rooms, "
                       f"{unread} unread", w, curses.A_BOLD)
        for i, r in enumerate(self.rooms[: h - 2]):
            attr = curses.A_REVERSE if i == self.selected else 0
            if r["room_id"] == self.open:
                attr |= curses.A_BOLD
            self.put(i + 1, 0, self.room_line(r, lw), lw, attr)
        for y in range(1, h - 1):
            self.put(y, lw, "│", 1)
        tw = w - lw - 2
        for y, (text, attr) in enumerate(self.timeline_lines(h - 2, tw)):
            self.put(y + 1, lw + 2, text, tw, attr)
        if self.composing:
            line = "> " + self.compose
            self.put(h - 1, 0, line, w)
            curses.curs_set(1)
            scr.move(h - 1, min(len(line), w - 1))
        else:
            hint = "Up/Down select · Enter open · PgUp history · type to write · q quit"
            self.put(h - 1, 0, self.note or hint, w, curses.A_DIM)
            curses.curs_set(0)
        scr.refresh()
        self.dirty = False

    @staticmethod
    def room_line(r: Dict[str, Any], width: int) -> str:
        mark = "+" if r["invite"] else ("*" if r["favourite"] else " ")
        count = f" {r['unread_messages']}" if r["unread_messages"] else ""
        if r["invite"]:
            count = " invite"
        name = r["name"][: max(1, width - 2 - len(count))]
        return f"{mark}{name}".ljust(width - len(count))[: width - len(count)] + count

    def timeline_lines(self, height: int, width: int) -> List[Tuple[str, int]]:
        if self.open is None:
            return [("Select a room and press Enter.", curses.A_DIM)]
        info = self.store.room(self.open)
        if info is None:
            return [("This room is gone.", curses.A_DIM)]
        if "invite" in info:
            inviter = info["invite"].get("inviter") or "someone"
            return [(f"An invite from {inviter} (accept it in another client).", curses.A_DIM)]
        name = info["entry"]["name"] if info.get("entry") else self.open
        tl = self.store.timeline(self.open, limit=self.scroll + height)
        lines: List[Tuple[str, int]] = []
        for item in tl["events"]:
            lines.append((self.event_line(item["event"], item.get("edit")), 0))
        if self.scroll == 0:
            for item in tl["pending"]:
                ev = item["event"]
                status = item.get("send_status", "sending")
                tag = f" (failed: {ev.get('send_error')})" if status == "failed" else f" ({status})"
                lines.append((self.event_line(ev, None) + tag, curses.A_DIM))
        end = len(lines) - self.scroll if self.scroll else len(lines)
        shown = lines[max(0, end - (height - 1)): end]
        more = "PgUp: older" if tl["has_more"] else "start of the room"
        if tl["paginating"]:
            more = "loading older messages…"
        head = (f"{name}  ({more})", curses.A_BOLD)
        return [head] + [(t[:width], a) for t, a in shown]

    def event_line(self, ev: Dict[str, Any], edit: Optional[Dict[str, Any]]) -> str:
        ts = time.strftime("%H:%M", time.localtime(ev.get("timestamp", 0) / 1000))
        content = (edit or ev).get("content") or {}
        body = content.get("m.new_content", {}).get("body") or content.get("body")
        if body is None:
            body = f"[{ev.get('type')}]"
        return f"{ts} {localpart(ev.get('sender', '?'))}: {body}"


def run(scr: Any, client: tether.Client) -> None:
    curses.use_default_colors()
    scr.nodelay(True)
    scr.keypad(True)
    app = App(scr, client)
    while True:
        if not app.take_events(0.05):
            return
        while True:
            try:
                k = scr.get_wch()
            except curses.error:
                break  # no key waiting
            if k == curses.KEY_RESIZE:
                app.dirty = True
                continue
            if not app.key(k):
                return
        if app.dirty:
            app.draw()


def main(argv: List[str]) -> int:
    args = Args(argv)
    if not args.url:
        print(f"usage: {argv[0]} URL [user] [password]   (or TETHER_URL, TETHER_USER, "
              "TETHER_PASSWORD / TETHER_TOKEN)", file=sys.stderr)
        return 2
    os.environ.setdefault("ESCDELAY", "25")  # Esc alone without curses' 1 s wait
    with tether.Client(args.url, store=True, **args.options()) as client:
        try:
            curses.wrapper(run, client)
        except KeyboardInterrupt:
            pass
        if client.fatal is not None:
            print(f"store_tui: {client.fatal}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
