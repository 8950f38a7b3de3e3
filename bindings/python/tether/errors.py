"""Status codes of the tether C library and the exceptions they map to.

Every negative ``TETHER_ERR_*`` status of ``include/tether.h`` has its own exception class,
all derived from :class:`TetherError`. The classes are grouped so that callers can catch a
whole family:

* :class:`RequestError` -- the outcome of one request (remote error, timeout, cancel,
  disconnect, client closed);
* :class:`ConnectionFailedError` -- why a connection ended (connect, TLS, auth, HTTP,
  receive timeout, close frame, protocol violations; in-process, the backend's start);
* :class:`UsageError` -- a call the library refused (bad argument, wrong state or mode,
  configuration, a call that does not apply to the transport, a data root in use, a full
  send buffer);
* :class:`PanicError` and :class:`ForkedError` -- the library cannot be used any more (in
  this client, or in this process).

Several classes also derive from the matching built-in exception (``ValueError``,
``TimeoutError``, ``ConnectionError``) so generic handlers keep working.
"""

from __future__ import annotations

import enum
from typing import Dict, Optional, Type

__all__ = [
    "Status",
    "TetherError",
    "UsageError",
    "NullArgumentError",
    "InvalidArgumentError",
    "InvalidUtf8Error",
    "StateError",
    "WrongModeError",
    "ConfigError",
    "BufferTooSmallError",
    "UnsupportedError",
    "InUseError",
    "SendBufferFullError",
    "PanicError",
    "ForkedError",
    "RequestError",
    "RemoteError",
    "RequestTimeoutError",
    "RequestCancelledError",
    "DisconnectedError",
    "ClientClosedError",
    "ConnectionFailedError",
    "ConnectError",
    "TlsError",
    "CertificateError",
    "AuthError",
    "UnauthorizedError",
    "ForbiddenError",
    "KeyRevokedError",
    "HttpError",
    "ReceiveTimeoutError",
    "RemoteClosedError",
    "ProtocolError",
    "InflateError",
    "JsonError",
    "MessageTooLargeError",
    "VersionMismatchError",
    "BackendStartError",
    "BackendDatabaseError",
    "BackendAccountError",
    "LibraryError",
    "exception_for",
]


class Status(enum.IntEnum):
    """A ``tether_status`` value: ``OK`` (0), positive information, negative errors."""

    OK = 0
    TIMEOUT = 1
    CLOSED = 2
    ERR_NULL = -1
    ERR_INVALID_ARGUMENT = -2
    ERR_INVALID_UTF8 = -3
    ERR_STATE = -4
    ERR_WRONG_MODE = -5
    ERR_PANIC = -6
    ERR_FORKED = -7
    ERR_CONFIG = -8
    ERR_BUFFER_TOO_SMALL = -9
    ERR_UNSUPPORTED = -10
    ERR_IN_USE = -11
    ERR_SEND_BUFFER_FULL = -12
    ERR_REMOTE = -20
    ERR_REQUEST_TIMEOUT = -21
    ERR_CANCELLED = -22
    ERR_DISCONNECTED = -23
    ERR_CLIENT_CLOSED = -24
    ERR_CONNECT = -30
    ERR_TLS = -31
    ERR_UNAUTHORIZED = -32
    ERR_FORBIDDEN = -33
    ERR_HTTP = -34
    ERR_RECEIVE_TIMEOUT = -35
    ERR_REMOTE_CLOSED = -36
    ERR_CERTIFICATE = -37
    ERR_PROTOCOL = -40
    ERR_INFLATE = -41
    ERR_JSON = -42
    ERR_MESSAGE_TOO_LARGE = -43
    ERR_VERSION_MISMATCH = -50
    ERR_KEY_REVOKED = -51
    ERR_BACKEND_DATABASE = -60
    ERR_BACKEND_ACCOUNT = -61
    ERR_BACKEND_START = -62


class TetherError(Exception):
    """Base class of every error raised by this package.

    ``status`` is the library's status code (an :class:`int`, a :class:`Status` member when
    known) and ``message`` the human-readable reason (``tether_last_error()`` or the text the
    event carried).
    """

    #: The status this class stands for (``None`` on the base classes).
    STATUS: Optional[Status] = None

    def __init__(self, message: str = "", status: Optional[int] = None) -> None:
        if status is None:
            status = self.STATUS if self.STATUS is not None else 0
        try:
            status = Status(status)
        except ValueError:
            pass
        self.status: int = status
        self.message: str = message
        super().__init__(message)

    def __str__(self) -> str:
        name = self.status.name if isinstance(self.status, Status) else str(self.status)
        return f"{self.message} [{name}]" if self.message else f"[{name}]"


class LibraryError(TetherError):
    """A status this package does not know (a newer library than the binding)."""


# -- the caller's fault (or the binding's) --------------------------------------------------


class UsageError(TetherError):
    """The library refused a call: bad argument, wrong state or mode, bad configuration."""


class NullArgumentError(UsageError, ValueError):
    """``TETHER_ERR_NULL``: a required pointer was NULL (a bug in this binding)."""

    STATUS = Status.ERR_NULL


class InvalidArgumentError(UsageError, ValueError):
    """``TETHER_ERR_INVALID_ARGUMENT``: an argument was out of range or malformed."""

    STATUS = Status.ERR_INVALID_ARGUMENT


class InvalidUtf8Error(UsageError, ValueError):
    """``TETHER_ERR_INVALID_UTF8``: a string was not UTF-8 or a payload was not JSON."""

    STATUS = Status.ERR_INVALID_UTF8


class StateError(UsageError):
    """``TETHER_ERR_STATE``: the call is not valid in the client's current state."""

    STATUS = Status.ERR_STATE


class WrongModeError(StateError):
    """``TETHER_ERR_WRONG_MODE``: poll mode and callback mode were mixed."""

    STATUS = Status.ERR_WRONG_MODE


class ConfigError(UsageError, ValueError):
    """``TETHER_ERR_CONFIG``: the configuration is invalid (URL, scheme, key, ...)."""

    STATUS = Status.ERR_CONFIG


class BufferTooSmallError(UsageError):
    """``TETHER_ERR_BUFFER_TOO_SMALL``: an output buffer was too small."""

    STATUS = Status.ERR_BUFFER_TOO_SMALL


class UnsupportedError(UsageError):
    """``TETHER_ERR_UNSUPPORTED``: the call does not apply to this client's transport or
    protocol: ``pause``/``unpause``/``reconnect_now`` in-process, media uploads and
    downloads over the websocket, or (as a download's outcome) a backend library without
    streaming download."""

    STATUS = Status.ERR_UNSUPPORTED


class InUseError(UsageError):
    """``TETHER_ERR_IN_USE``: the in-process backend's data root is used by another client
    (in this process or another), or another in-process backend runs in this process."""

    STATUS = Status.ERR_IN_USE


class SendBufferFullError(UsageError):
    """``TETHER_ERR_SEND_BUFFER_FULL``: more bytes of requests and packets already wait to be
    written than the client's ``max_unsent_bytes`` allows with this one (the server does not
    read, the uplink is slow, or the client is disconnected). Nothing was taken: make the call
    again after the :attr:`~tether.EventKind.SEND_READY` event that follows once room frees."""

    STATUS = Status.ERR_SEND_BUFFER_FULL


class PanicError(TetherError):
    """``TETHER_ERR_PANIC``: the library caught an internal panic; the client sends nothing more
    (after a panic of its session, its last events can still be taken)."""

    STATUS = Status.ERR_PANIC


class ForkedError(TetherError):
    """The client (or the library) is used in a child process after ``fork()``.

    Raised by this package as soon as a client created in the parent is touched in the child,
    and for ``TETHER_ERR_FORKED``. Create new clients in the child only if the parent never
    created one (the library's runtime threads do not survive a fork).
    """

    STATUS = Status.ERR_FORKED


# -- the outcome of one request -------------------------------------------------------------


class RequestError(TetherError):
    """A request did not succeed. ``request_id`` is the library's id of the request."""

    def __init__(
        self, message: str = "", status: Optional[int] = None, request_id: int = 0
    ) -> None:
        super().__init__(message, status)
        self.request_id: int = request_id


class RemoteError(RequestError):
    """``TETHER_ERR_REMOTE``: the server answered with an error; ``message`` is its text."""

    STATUS = Status.ERR_REMOTE


class RequestTimeoutError(RequestError, TimeoutError):
    """``TETHER_ERR_REQUEST_TIMEOUT``: no reply in time; the server was told to cancel."""

    STATUS = Status.ERR_REQUEST_TIMEOUT


class RequestCancelledError(RequestError):
    """``TETHER_ERR_CANCELLED``: the request was cancelled by the caller."""

    STATUS = Status.ERR_CANCELLED


class DisconnectedError(RequestError, ConnectionError):
    """``TETHER_ERR_DISCONNECTED``: the connection dropped first; the outcome is unknown."""

    STATUS = Status.ERR_DISCONNECTED


class ClientClosedError(RequestError):
    """``TETHER_ERR_CLIENT_CLOSED``: the client was closed before (or instead of) the call."""

    STATUS = Status.ERR_CLIENT_CLOSED


# -- why a connection ended (DISCONNECTED events) -------------------------------------------


class ConnectionFailedError(TetherError, ConnectionError):
    """Base of the reasons a connection ends (the status of a DISCONNECTED event)."""


class ConnectError(ConnectionFailedError):
    """``TETHER_ERR_CONNECT``: TCP connect or I/O failure."""

    STATUS = Status.ERR_CONNECT


class TlsError(ConnectionFailedError):
    """``TETHER_ERR_TLS``: the TLS handshake failed for a reason other than a certificate
    (retried with backoff)."""

    STATUS = Status.ERR_TLS


class CertificateError(TlsError):
    """``TETHER_ERR_CERTIFICATE``: a certificate was refused — the server's (unknown issuer,
    wrong name, expired, no pin matches) or ours (the server refused or required a client
    certificate). Final: the client stops after that one attempt."""

    STATUS = Status.ERR_CERTIFICATE


class AuthError(ConnectionFailedError):
    """Base of the credential failures."""


class UnauthorizedError(AuthError):
    """``TETHER_ERR_UNAUTHORIZED``: the server rejected the credentials."""

    STATUS = Status.ERR_UNAUTHORIZED


class ForbiddenError(AuthError):
    """``TETHER_ERR_FORBIDDEN``: the server refused the request (HTTP 403)."""

    STATUS = Status.ERR_FORBIDDEN


class KeyRevokedError(AuthError):
    """``TETHER_ERR_KEY_REVOKED``: rwws access key revoked (close 3004)."""

    STATUS = Status.ERR_KEY_REVOKED


class HttpError(ConnectionFailedError):
    """``TETHER_ERR_HTTP``: the websocket upgrade failed with another HTTP status."""

    STATUS = Status.ERR_HTTP


class ReceiveTimeoutError(ConnectionFailedError):
    """``TETHER_ERR_RECEIVE_TIMEOUT``: nothing was received within the receive timeout."""

    STATUS = Status.ERR_RECEIVE_TIMEOUT


class RemoteClosedError(ConnectionFailedError):
    """``TETHER_ERR_REMOTE_CLOSED``: the server sent a close frame (see the close code)."""

    STATUS = Status.ERR_REMOTE_CLOSED


class ProtocolError(ConnectionFailedError):
    """``TETHER_ERR_PROTOCOL``: the server violated the protocol."""

    STATUS = Status.ERR_PROTOCOL


class InflateError(ProtocolError):
    """``TETHER_ERR_INFLATE``: server data could not be inflated."""

    STATUS = Status.ERR_INFLATE


class JsonError(ProtocolError):
    """``TETHER_ERR_JSON``: server data was not valid JSON or UTF-8."""

    STATUS = Status.ERR_JSON


class MessageTooLargeError(ProtocolError):
    """``TETHER_ERR_MESSAGE_TOO_LARGE``: a server message exceeded the size cap."""

    STATUS = Status.ERR_MESSAGE_TOO_LARGE


class VersionMismatchError(ProtocolError):
    """``TETHER_ERR_VERSION_MISMATCH``: rwws protocol version mismatch (close 3002)."""

    STATUS = Status.ERR_VERSION_MISMATCH


class BackendStartError(ConnectionFailedError):
    """``TETHER_ERR_BACKEND_START``: the in-process backend failed to start (``GomuksStart``
    returned 12, or another non-zero code), e.g. a logged-in account whose homeserver is
    unreachable. Final: the client ends (DISCONNECTED with no retry, then CLOSED)."""

    STATUS = Status.ERR_BACKEND_START


class BackendDatabaseError(BackendStartError):
    """``TETHER_ERR_BACKEND_DATABASE``: the in-process backend could not open its database
    (``GomuksStart`` returned 10)."""

    STATUS = Status.ERR_BACKEND_DATABASE


class BackendAccountError(BackendStartError):
    """``TETHER_ERR_BACKEND_ACCOUNT``: the in-process backend could not look up its account
    (``GomuksStart`` returned 11)."""

    STATUS = Status.ERR_BACKEND_ACCOUNT


def _classes() -> Dict[int, Type[TetherError]]:
    out: Dict[int, Type[TetherError]] = {}
    stack = [TetherError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        if cls.STATUS is not None and "STATUS" in cls.__dict__:
            out[int(cls.STATUS)] = cls
    return out


_BY_STATUS: Dict[int, Type[TetherError]] = _classes()


def exception_for(status: int, message: str = "", request_id: int = 0) -> TetherError:
    """The exception instance for a negative status (``LibraryError`` if unknown)."""
    cls = _BY_STATUS.get(int(status), LibraryError)
    if issubclass(cls, RequestError):
        return cls(message, status, request_id=request_id)
    return cls(message, status)
