"""Loads the tether shared library with ctypes and declares every function of
``include/tether.h`` (argtypes and restype), then checks the library's ABI version.

Which file is loaded:

1. ``$TETHER_LIBRARY`` if set: a path to ``libtether.so`` / ``libtether.dylib``, or a bare
   file name that the dynamic loader searches for (e.g. a system-wide install);
2. otherwise the copy bundled in ``tether/_native/`` by ``pip install``.

``ctypes.CDLL`` releases the GIL for the duration of every call, so a thread blocked in
``tether_client_poll_batch`` does not stop other Python threads.
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from ctypes import (
    CFUNCTYPE,
    POINTER,
    c_bool,
    c_char,
    c_char_p,
    c_double,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint16,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import Any, Dict, List, Optional, Tuple

from .errors import ForkedError, Status, TetherError, exception_for

#: MAJOR.MINOR of the C ABI this binding was written for (``TETHER_VERSION_*`` in the
#: header). Before 1.0 a different MAJOR.MINOR means an incompatible ABI.
ABI_VERSION: Tuple[int, int] = (0, 1)

#: ``TETHER_PROTOCOL_*``.
PROTOCOL_GOMUKS = 1
PROTOCOL_RWWS = 2

#: ``tether_batch_entry``: 80 bytes, native byte order, offsets as documented in the header:
#: request_id@0 data_offset@8 data_len@16 acked_id@24 server_time_ms@32 rtt_us@40
#: retry_in_ms@48 kind@56 status@60 command_offset@64 command_len@68 attempt@72
#: close_code@76 resume_attempted@78 resume_outcome@79.
BATCH_ENTRY = struct.Struct("=qQQqqqqIiIIIHBB")
#: The field names in ``BATCH_ENTRY`` order (the header's declaration order).
BATCH_FIELDS = (
    "request_id",
    "data_offset",
    "data_len",
    "acked_id",
    "server_time_ms",
    "rtt_us",
    "retry_in_ms",
    "kind",
    "status",
    "command_offset",
    "command_len",
    "attempt",
    "close_code",
    "resume_attempted",
    "resume_outcome",
)
assert BATCH_ENTRY.size == 80
#: The fields a MESSAGE, RESPONSE or STORE entry carries, the rest skipped: request_id,
#: data_offset, data_len, kind, status, command_offset, command_len. Seven ints per event
#: instead of fifteen, on the path nearly every event takes.
BATCH_ENTRY_COMMON = struct.Struct("=qQQ32xIiII8x")
assert BATCH_ENTRY_COMMON.size == BATCH_ENTRY.size

#: ``tether_event_cb`` and ``tether_destroy_cb``.
EVENT_CB = CFUNCTYPE(None, c_void_p, c_void_p)
DESTROY_CB = CFUNCTYPE(None, c_void_p)
#: ``tether_proxy_resolver_cb``: ``(ctx, url, answer) -> tether_status``.
PROXY_RESOLVER_CB = CFUNCTYPE(c_int32, c_void_p, c_char_p, c_void_p)



class LogRecord(ctypes.Structure):
    """``tether_log_record``: lent to the log callback for the duration of one call."""

    _fields_ = [
        ("level", c_uint32),
        ("target", c_char_p),
        ("client_id", c_uint64),
        ("message", c_char_p),
        ("unix_time_us", c_int64),
    ]


#: ``tether_log_cb``.
LOG_CB = CFUNCTYPE(None, c_void_p, POINTER(LogRecord))


class StatsStruct(ctypes.Structure):
    """``tether_stats``, in the header's field order (the struct only grows at its end)."""

    _fields_ = [
        ("size", c_uint32),
        ("state", c_uint32),
        ("connect_attempts", c_uint64),
        ("connections", c_uint64),
        ("resumes_succeeded", c_uint64),
        ("resumes_reset", c_uint64),
        ("wire_bytes_in", c_uint64),
        ("wire_bytes_out", c_uint64),
        ("payload_bytes_in", c_uint64),
        ("messages_received", c_uint64),
        ("events_received", c_uint64),
        ("requests_sent", c_uint64),
        ("requests_in_flight", c_uint64),
        ("requests_timed_out", c_uint64),
        ("queued_events", c_uint64),
        ("last_rtt_us", c_int64),
        ("connected_ms", c_int64),
        ("unsent_bytes", c_uint64),
    ]


_status = c_int32
_p = c_void_p  # every opaque handle (tether_client *, tether_config *, ...)
_pp = POINTER(c_void_p)  # an out-pointer to a handle or to borrowed memory

#: Every exported function: name -> (restype, argtypes). Checked against the header by
#: ``tests/test_ffi.py``.
SIGNATURES: Dict[str, Tuple[Any, List[Any]]] = {
    # batch
    "tether_batch_new": (_status, [c_size_t, _pp]),
    "tether_batch_new_lending": (_status, [c_size_t, _pp]),
    "tether_client_poll_batch": (_status, [_p, c_int32, _p, POINTER(c_size_t)]),
    "tether_batch_clear": (None, [_p]),
    "tether_batch_view": (
        _status,
        [_p, _pp, POINTER(c_size_t), _pp, POINTER(c_size_t)],
    ),
    "tether_batch_payloads": (_status, [_p, _pp, POINTER(c_size_t)]),
    "tether_batch_free": (None, [_p]),
    # client
    "tether_client_new": (_status, [_p, _pp]),
    "tether_client_connect": (_status, [_p]),
    "tether_client_request": (
        _status,
        [_p, c_char_p, c_char_p, c_size_t, POINTER(c_int64)],
    ),
    "tether_client_request_with_timeout": (
        _status,
        [_p, c_char_p, c_char_p, c_size_t, c_uint32, POINTER(c_int64)],
    ),
    "tether_client_upload_media": (
        _status,
        [_p, c_char_p, c_size_t, c_char_p, c_size_t, c_uint32, POINTER(c_int64)],
    ),
    "tether_client_download_media": (
        _status,
        [_p, c_char_p, c_size_t, c_uint32, POINTER(c_int64)],
    ),
    "tether_client_cancel": (_status, [_p, c_int64]),
    "tether_client_send_packet": (_status, [_p, c_char_p, c_size_t]),
    "tether_client_poll": (_status, [_p, c_int32, _pp]),
    "tether_client_event_fd": (c_int, [_p]),
    "tether_client_set_event_callback": (_status, [_p, EVENT_CB, _p, DESTROY_CB]),
    "tether_client_close": (_status, [_p]),
    "tether_client_close_keep_resume": (_status, [_p]),
    "tether_client_pause": (_status, [_p]),
    "tether_client_unpause": (_status, [_p]),
    "tether_client_reconnect_now": (_status, [_p]),
    "tether_client_resume_state": (
        _status,
        [_p, POINTER(c_char), c_size_t, POINTER(c_size_t), POINTER(c_int64)],
    ),
    "tether_client_auth_token": (_status, [_p, POINTER(c_char), c_size_t, POINTER(c_size_t)]),
    "tether_client_free": (None, [_p]),
    # config
    "tether_config_new": (_status, [_pp]),
    "tether_config_set_url": (_status, [_p, c_char_p]),
    "tether_config_set_protocol": (_status, [_p, c_uint32]),
    "tether_config_set_token": (_status, [_p, c_char_p]),
    "tether_config_set_basic_auth": (_status, [_p, c_char_p, c_char_p]),
    "tether_config_set_compression": (_status, [_p, c_bool]),
    "tether_config_set_ping_interval_ms": (_status, [_p, c_uint32]),
    "tether_config_set_receive_timeout_ms": (_status, [_p, c_uint32]),
    "tether_config_set_pong_timeout_ms": (_status, [_p, c_uint32]),
    "tether_config_set_request_timeout_ms": (_status, [_p, c_uint32]),
    "tether_config_set_connect_timeout_ms": (_status, [_p, c_uint32]),
    "tether_config_set_reconnect_backoff_ms": (_status, [_p, c_uint32, c_uint32]),
    "tether_config_set_max_message_bytes": (_status, [_p, c_size_t]),
    "tether_config_set_queue_capacity": (_status, [_p, c_size_t]),
    "tether_config_set_max_unsent_bytes": (_status, [_p, c_size_t]),
    "tether_config_set_resume_state": (_status, [_p, c_char_p, c_int64]),
    "tether_config_set_last_server_ts": (_status, [_p, c_int64]),
    "tether_config_set_prev_listener_id": (_status, [_p, c_bool]),
    "tether_config_add_header": (_status, [_p, c_char_p, c_char_p]),
    "tether_config_set_ca_pem": (_status, [_p, c_char_p, c_size_t]),
    "tether_config_set_crl_pem": (_status, [_p, c_char_p, c_size_t]),
    "tether_config_add_pin_sha256": (_status, [_p, c_char_p]),
    "tether_config_set_client_cert_pem": (_status, [_p, c_char_p, c_size_t, c_char_p, c_size_t]),
    "tether_config_set_use_os_trust": (_status, [_p, c_bool]),
    "tether_config_set_allow_insecure_credentials": (_status, [_p, c_bool]),
    "tether_config_set_proxy": (_status, [_p, c_char_p]),
    "tether_config_set_proxy_resolver": (_status, [_p, PROXY_RESOLVER_CB, _p, DESTROY_CB]),
    "tether_proxy_answer_set": (_status, [_p, c_char_p]),
    "tether_config_set_in_process": (_status, [_p, c_char_p, c_char_p]),
    "tether_config_free": (None, [_p]),
    # event
    "tether_event_kind": (c_uint32, [_p]),
    "tether_event_request_id": (c_int64, [_p]),
    "tether_event_status": (_status, [_p]),
    "tether_event_command": (c_char_p, [_p]),
    "tether_event_data": (_status, [_p, _pp, POINTER(c_size_t)]),
    "tether_event_close_code": (c_uint16, [_p]),
    "tether_event_retry_in_ms": (c_int64, [_p]),
    "tether_event_rtt_us": (c_int64, [_p]),
    "tether_event_acked_id": (c_int64, [_p]),
    "tether_event_server_time_ms": (c_int64, [_p]),
    "tether_event_resume_attempted": (c_bool, [_p]),
    "tether_event_attempt": (c_uint32, [_p]),
    "tether_event_resume_outcome": (c_uint32, [_p]),
    "tether_event_progress": (c_double, [_p]),
    "tether_event_free": (None, [_p]),
    # misc
    "tether_status_str": (c_char_p, [_status]),
    "tether_last_error": (c_char_p, []),
    "tether_version": (c_char_p, []),
    "tether_version_number": (c_uint32, []),
    # observability
    "tether_set_log_callback": (_status, [LOG_CB, _p, DESTROY_CB, c_uint32]),
    "tether_client_id": (c_uint64, [_p]),
    "tether_client_state": (_status, [_p, POINTER(c_uint32)]),
    "tether_client_stats": (_status, [_p, POINTER(StatsStruct)]),
    # rwws settings
    "tether_settings_new": (_status, [_pp]),
    "tether_settings_add": (_status, [_p, c_uint8, c_char_p, c_size_t]),
    "tether_client_send_settings": (_status, [_p, _p]),
    "tether_settings_free": (None, [_p]),
    # store
    "tether_store_new": (_status, [_p, c_char_p, _pp]),
    "tether_store_free": (None, [_p]),
    "tether_store_read": (
        _status,
        [_p, c_char_p, c_char_p, POINTER(c_char), c_size_t, POINTER(c_size_t)],
    ),
    "tether_store_paginate": (_status, [_p, c_char_p, c_uint32, POINTER(c_int64)]),
    "tether_store_load_state": (_status, [_p, c_char_p, c_bool, POINTER(c_int64)]),
    "tether_store_send_message": (_status, [_p, c_char_p, POINTER(c_int64)]),
    "tether_store_mark_read": (_status, [_p, c_char_p, c_char_p, POINTER(c_int64)]),
    "tether_store_request_members": (_status, [_p, c_char_p, c_char_p, POINTER(c_int64)]),
    "tether_store_resend": (_status, [_p, c_char_p, c_int64, POINTER(c_int64)]),
    "tether_store_discard": (_status, [_p, c_char_p, c_int64]),
    "tether_store_set_open": (_status, [_p, c_char_p, c_bool]),
    "tether_store_watch": (_status, [_p, c_char_p, c_bool]),
    "tether_store_collect_garbage": (_status, [_p, POINTER(c_size_t)]),
}


class LibraryLoadError(ImportError):
    """The native library is missing, cannot be loaded, or has an incompatible ABI."""


def _library_name() -> str:
    if sys.platform == "darwin":
        return "libtether.dylib"
    if sys.platform == "win32":
        return "tether.dll"
    return "libtether.so"


def library_path() -> str:
    """The path of the shared library this package loads (or would load)."""
    env = os.environ.get("TETHER_LIBRARY")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "_native", _library_name())


def _load() -> ctypes.CDLL:
    path = library_path()
    # A bare name ("libtether.so.0.1") is left to the dynamic loader's search path.
    if os.sep in path and not os.path.exists(path):
        raise LibraryLoadError(
            f"tether: native library not found at {path}. Install the package with "
            "`pip install ./bindings/python` (which builds and bundles it) or set "
            "TETHER_LIBRARY=/path/to/libtether.so"
        )
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise LibraryLoadError(f"tether: cannot load {path}: {e}") from e
    for name, (restype, argtypes) in SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise LibraryLoadError(
                f"tether: {path} does not export {name}; it is not the library this "
                f"binding (ABI {ABI_VERSION[0]}.{ABI_VERSION[1]}) was written for"
            ) from e
        fn.restype = restype
        fn.argtypes = argtypes
    check_version(lib.tether_version_number(), lib.tether_version().decode(), path)
    return lib


def compatible(library: Tuple[int, int], binding: Tuple[int, int] = ABI_VERSION) -> bool:
    """Whether a library of MAJOR.MINOR ``library`` serves a binding written for ``binding``:
    before 1.0 a minor release may change the ABI, so both must match; from 1.0 on a newer
    minor release only adds, so the library's minor may be higher."""
    (major, minor), (want_major, want_minor) = library, binding
    if major != want_major:
        return False
    return minor == want_minor if want_major == 0 else minor >= want_minor


def check_version(number: int, text: str, path: str = "the library") -> None:
    """Raises :class:`LibraryLoadError` unless ``number`` is :func:`compatible`."""
    major, minor = (number >> 16) & 0xFF, (number >> 8) & 0xFF
    if not compatible((major, minor)):
        raise LibraryLoadError(
            f"tether: {path} is version {text} (ABI {major}.{minor}), but this Python binding "
            f"needs ABI {ABI_VERSION[0]}.{ABI_VERSION[1]}; rebuild and reinstall the package "
            "or point TETHER_LIBRARY at a matching build"
        )


lib: ctypes.CDLL = _load()

#: The library's version string, e.g. "0.1.0".
LIBRARY_VERSION: str = lib.tether_version().decode()


def last_error() -> str:
    """``tether_last_error()`` of the calling thread, decoded."""
    raw = lib.tether_last_error()
    return raw.decode("utf-8", "replace") if raw else ""


def status_str(status: int) -> str:
    """``tether_status_str(status)``, decoded."""
    raw: bytes = lib.tether_status_str(status)
    return raw.decode("utf-8", "replace")


def check(status: int, what: str = "") -> int:
    """Returns non-negative statuses; raises the mapped exception for negative ones."""
    if status >= 0:
        return status
    raise error(status, what)


def error(status: int, what: str = "") -> TetherError:
    """The exception for a failed call on this thread (message from ``tether_last_error``)."""
    msg = last_error() or status_str(status)
    if what:
        msg = f"{what}: {msg}"
    return exception_for(status, msg)


def forked_error() -> ForkedError:
    """The error raised when a client is used in a forked child."""
    return ForkedError(
        "this tether client was created in another process; after fork() the child cannot "
        "use it (create clients after forking, in the process that uses them)",
        Status.ERR_FORKED,
    )


def int_range(ctype: Any) -> "tuple[int, int]":
    """The values an integer ctype holds; ctypes wraps anything outside them silently."""
    bits = 8 * ctypes.sizeof(ctype)
    if ctype(-1).value > 0:
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def new_handle(fn: Any, *args: Any) -> int:
    """Calls a ``*_new(..., out)`` constructor and returns the handle."""
    out = c_void_p()
    check(fn(*args, ctypes.byref(out)))
    assert out.value is not None
    return out.value


def borrowed_bytes(ptr: Optional[int], length: int) -> bytes:
    """Copies ``length`` bytes at ``ptr`` (``b""`` for 0)."""
    if not length or not ptr:
        return b""
    return ctypes.string_at(ptr, length)
