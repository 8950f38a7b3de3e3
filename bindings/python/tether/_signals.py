"""Holding Python signal handlers back while a batch the library handed over is delivered,
shared by the blocking and the asyncio client: a handler that raises (Ctrl-C, a SIGTERM
handler's SystemExit) in the middle of a batch would lose the rest of it."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

try:
    # The C module behind `signal`, whose getsignal() and signal() wrap each call in enum
    # conversions: 1.8 µs and 2.7 µs per call against 0.04 and 0.2 µs here, which made holding
    # the handlers back cost 10 µs per batch (and per blocking request's round trip).
    import _signal as _sig
except ImportError:  # pragma: no cover - not CPython
    _sig = signal  # type: ignore[assignment]

#: Signals a Python handler may be set for (SIGKILL and SIGSTOP cannot have one).
_HANDLEABLE_SIGNALS = tuple(
    sorted(
        int(n)
        for n in set(signal.valid_signals())
        - {getattr(signal, n) for n in ("SIGKILL", "SIGSTOP") if hasattr(signal, n)}
    )
)


#: The signals that had a Python handler at the last look, and when that was: asking for every
#: signal's handler (about 2 µs) would double what holding them back costs per batch.
_handled: List[Any] = [(), -1.0]
_RESCAN_S = 0.05


def rescan_signals() -> Tuple[int, ...]:
    """Looks again which signals have a Python handler (main thread)."""
    found = tuple(n for n in _HANDLEABLE_SIGNALS if callable(_sig.getsignal(n)))
    _handled[0], _handled[1] = found, time.monotonic()
    return found


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """On the main thread, holds Python signal handlers back while a batch taken from the
    library is delivered: a handler that raises (Ctrl-C) in the middle would lose the rest of
    the batch, which the library has already handed over. Each such handler is swapped for
    one that only notes the signal, and the noted signals are handled right after, in order,
    by the app's handlers (see _restore_signals). Masking the signal instead does not work:
    the kernel hands a process signal to another thread, and Python still runs the handler on
    the main thread.
    Which signals have handlers is looked up again every 50 ms and when ``events()`` starts,
    so a handler set within 50 ms inside a loop may still interrupt a batch. Other threads
    never run signal handlers, so they skip this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = _handled[0]
    if time.monotonic() - _handled[1] > _RESCAN_S:
        handled = rescan_signals()
    noted: List[int] = []
    saved: Dict[int, Any] = {}
    try:
        for n in handled:
            h = _sig.getsignal(n)
            if callable(h):
                saved[n] = h
                _sig.signal(n, lambda signum, frame: noted.append(signum))
        yield
    finally:
        _restore_signals(saved, noted)


def _restore_signals(saved: Dict[int, Any], noted: List[int]) -> None:
    """Puts every saved handler back, then runs the app's handler of each noted signal, in
    order; the first exception a handler raised propagates once all of that is done. A signal
    that arrives once its own handler is back runs that handler between two of these steps:
    should it raise (Ctrl-C), stopping there would leave the signals after it with the noting
    stand-in for good, since the next batch saves whatever handler it finds."""
    first: Optional[BaseException] = None
    for n, h in saved.items():
        while True:
            try:
                _sig.signal(n, h)
                break
            except BaseException as e:  # a restored handler raised: restore on, raise later
                first = first or e
    frame = sys._getframe()
    for n in noted:
        try:
            saved[n](n, frame)
        except BaseException as e:
            first = first or e
    if first is not None:
        raise first
