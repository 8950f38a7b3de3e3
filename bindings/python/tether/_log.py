"""The library's log records, forwarded to the standard :mod:`logging` module.

The library has one process-wide log callback. This module installs it when the first
client of the process is created (not at import: importing tether starts no library thread,
and a process that only imports it, or forks before creating a client, leaves the library
untouched) and removes it at interpreter exit, after the clients were closed and before the
interpreter finalizes: a ctypes callback into a finalizing interpreter aborts the process.

A record of target ``tether::session`` goes to the logger ``tether.session``, at the level
:data:`LEVELS` maps it to, with the client's id as the record attribute ``tether_client``.
The callback is installed at TRACE and filtered here with ``isEnabledFor``: the library only
writes records about a connection's life (attempts, closes, resumes, backoff), never one per
message, so crossing into Python for each is cheap, and a logger level set after the first
client was created (``logging.basicConfig`` late in ``main``) still takes effect.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Dict, Optional

from . import _ffi

#: ``TETHER_LOG_*``.
NATIVE_LEVELS: Dict[str, int] = {"ERROR": 1, "WARN": 2, "INFO": 3, "DEBUG": 4, "TRACE": 5}

#: The :mod:`logging` level of TRACE records (below ``logging.DEBUG``).
TRACE = 5

#: Native level -> :mod:`logging` level.
LEVELS: Dict[int, int] = {
    1: logging.ERROR,
    2: logging.WARNING,
    3: logging.INFO,
    4: logging.DEBUG,
    5: TRACE,
}

#: The attribute of a :class:`logging.LogRecord` that holds the library's client id
#: (``Client.id``); 0 for a record that belongs to no client.
CLIENT_ATTR = "tether_client"

ROOT = "tether"

if logging.getLevelName(TRACE) == f"Level {TRACE}":
    logging.addLevelName(TRACE, "TRACE")



def _default_client(record: logging.LogRecord) -> bool:
    # The binding's own records (logged on "tether" itself) name no client: give them the
    # attribute too, so a format with %(tether_client)s works for every tether record.
    if not hasattr(record, CLIENT_ATTR):
        setattr(record, CLIENT_ATTR, 0)
    return True


logging.getLogger(ROOT).addFilter(_default_client)

# Target -> logger: a handful of targets, so the cache stays tiny and the callback skips
# logging's manager lock after the first record of each.
_loggers: Dict[bytes, logging.Logger] = {}


def logger_name(target: str) -> str:
    """``"tether::session"`` -> ``"tether.session"``; anything outside ``tether::`` is put
    under ``tether`` too, so every record reaches the ``tether`` logger's handlers."""
    name = target.replace("::", ".")
    if name != ROOT and not name.startswith(ROOT + "."):
        name = f"{ROOT}.{name}" if name else ROOT
    return name


def _logger_for(target: Optional[bytes]) -> logging.Logger:
    key = target or b""
    lg = _loggers.get(key)
    if lg is None:
        lg = logging.getLogger(logger_name(key.decode("utf-8", "replace")))
        _loggers[key] = lg
    return lg


def _on_log(_ctx: Optional[int], record: Any) -> None:
    # Runs on the library's tether-log thread. Nothing may escape: an exception here would
    # only be printed by ctypes, but a handler's failure must not even cost the next record.
    try:
        rec = record.contents
        level = LEVELS.get(rec.level, TRACE)
        lg = _logger_for(rec.target)
        if not lg.isEnabledFor(level):
            return
        message = (rec.message or b"").decode("utf-8", "replace")
        r = lg.makeRecord(
            lg.name, level, "(tether)", 0, "%s", (message,), None,
            extra={CLIENT_ATTR: int(rec.client_id)},
        )
        # The record's time is when the library wrote it, not when this thread got to it.
        created = rec.unix_time_us / 1e6
        r.created = created
        r.msecs = (created - int(created)) * 1000
        r.relativeCreated = (created - logging._startTime) * 1000
        with _emitting:
            lg.handle(r)
    except BaseException:  # noqa: BLE001 - see above; logging.raiseExceptions is for emit()
        pass


# Module-level: the library may call it until tether_set_log_callback(NULL) returns.
_LOG_THUNK = _ffi.LOG_CB(_on_log)

_lock = threading.Lock()
#: The pid that installed the callback; ``None`` while none is installed.
_installed_pid: Optional[int] = None
#: Set by the removal at exit: a client created by a later atexit handler must not install
#: it again, so close to finalization.
_removed_for_good = False


#: Held while a record is handled: a fork waits for it (see below). Reentrant, so a handler
#: that forks does not wait for itself.
_emitting = threading.RLock()
#: How long a fork waits for the record being handled; past it, it goes ahead as before.
FORK_WAIT_S = 2.0
#: Per forking thread (two may fork at once): whether its fork took `_emitting`.
_fork = threading.local()


def _before_fork() -> None:
    # Bounded: a handler may be slow (a network handler), or wait for something the forking
    # thread or a hook run before this one holds; the fork must not hang on it.
    try:
        _fork.held = _emitting.acquire(timeout=FORK_WAIT_S)
    except BaseException:  # noqa: BLE001 - an interrupt here would only be printed
        _fork.held = False


def _after_fork_in_parent() -> None:
    if getattr(_fork, "held", False):
        _fork.held = False
        _emitting.release()


def _after_fork_in_child() -> None:
    # The parent's lock may have been held by another thread at fork; the child has no
    # tether-log thread: install() tries again there with the child's first client.
    global _lock, _emitting
    _lock = threading.Lock()
    _emitting = threading.RLock()
    _fork.held = False


if hasattr(os, "register_at_fork"):
    # A fork waits (up to FORK_WAIT_S) until the tether-log thread has handed its record
    # over. Forked in the middle, the child would inherit what the handler held, such as the
    # lock of sys.stderr's buffer (which Python does not reset at fork), held by a thread the
    # child does not have: its first write to stderr would block for good. Registered after
    # logging's own hooks, so taken before logging's lock, which a handler may need.
    os.register_at_fork(
        before=_before_fork,
        after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child,
    )


def install() -> None:
    """Installs the log callback once per process (cheap after the first call)."""
    global _installed_pid
    # A forked child installs its own (the parent's log thread is not there): the library
    # takes it if the parent made no client, and refuses it (logged) otherwise.
    if _installed_pid == os.getpid() or _removed_for_good:
        return
    with _lock:
        if _installed_pid == os.getpid() or _removed_for_good:
            return
        st = _ffi.lib.tether_set_log_callback(_LOG_THUNK, None, _ffi.DESTROY_CB(), 5)
        if st == 0:
            _installed_pid = os.getpid()
        else:
            # Refused (a forked child of a process with clients): the client itself may
            # still be usable, so this costs the records only.
            logging.getLogger(ROOT).debug(
                "tether: log callback not installed: %s", _ffi.status_str(st)
            )


def uninstall(for_good: bool = False) -> None:
    """Removes the log callback if this process installed it; returns once the library will
    never call it again. The GIL is released during the call (ctypes), so a record being
    delivered right now can finish. ``for_good``: no later client installs it again (exit)."""
    global _installed_pid, _removed_for_good
    if for_good:
        _removed_for_good = True
    if _installed_pid != os.getpid():
        return
    with _lock:
        if _installed_pid != os.getpid():
            return
        _ffi.lib.tether_set_log_callback(_ffi.LOG_CB(), None, _ffi.DESTROY_CB(), 0)
        _installed_pid = None


def installed() -> bool:
    """Whether this process has the log callback installed."""
    return _installed_pid == os.getpid()
