"""tether: a resumable websocket RPC client (gomuks JSON RPC, rwws binary) for Python.

A ctypes binding of the tether native library. The library keeps the connection alive
(keepalive pings that acknowledge received events, reconnects with backoff) and resumes it
after a drop so buffered server events arrive exactly once. A gomuks client can also drive
the gomuks backend bundled into the process (``in_process=(library_path, data_root)``).

>>> import tether
>>> with tether.Client("http://127.0.0.1:29325", username="me", password="...") as client:
...     state = client.request("get_state", {})          # blocks, GIL released
...     for event in client.events(timeout=5):            # every event but replies
...         print(event.kind.name, event.command, event.id)

Asyncio: :class:`tether.aio.AsyncClient`. The native gomuks store (room list, timelines,
local echo): ``Client(..., store=True)``, see :mod:`tether.store`.
"""

from __future__ import annotations

from ._ffi import ABI_VERSION, LIBRARY_VERSION, LibraryLoadError, library_path
from ._options import Options, ResumeState
from .client import Client, PendingRequest, Transfer
# Every exception class and Status, as listed in errors.__all__ (one list, kept there).
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all
from .events import Event, EventKind, ResumeOutcome
from .stats import ConnectionState, Stats
from .store import ChangeStream, Store
from ._system_proxy import system_proxy

__version__ = "0.1.0"


def library_version() -> str:
    """The version of the loaded native library, e.g. ``"0.1.0"``."""
    return LIBRARY_VERSION


__all__ = [
    "Client",
    "PendingRequest",
    "Transfer",
    "Store",
    "ChangeStream",
    "Event",
    "EventKind",
    "ResumeOutcome",
    "ConnectionState",
    "Stats",
    "Options",
    "ResumeState",
    "system_proxy",
    "LibraryLoadError",
    "ABI_VERSION",
    "library_path",
    "library_version",
    "__version__",
    *_errors_all,
]
