"""The connection options of both clients, written once: :class:`Options` gives each one
its type (for type checkers, through ``**options: Unpack[Options]``), its default, the
``tether_config_*`` function it maps to and its documentation; :func:`build_config` applies
them to a native config."""

# No `from __future__ import annotations` here: the Option records inside the Annotated
# types are read at run time from Options.__annotations__.

import difflib
import itertools
import logging
import os
import sys
import threading
from typing import (
    Any,
    Callable,
    Dict,
    Iterable,
    Mapping,
    NamedTuple,
    Optional,
    Tuple,
    Union,
)

from . import _ffi
from .errors import InvalidArgumentError, Status

log = logging.getLogger("tether")

if sys.version_info >= (3, 9):
    from typing import Annotated, TypedDict
else:  # pragma: no cover - Python 3.8: typing has no Annotated
    from typing_extensions import Annotated, TypedDict


class ResumeState(NamedTuple):
    """Where a gomuks session can resume: the backend's ``run_id`` and the id of the last
    buffered event received (0 or negative). Persist it and pass it as ``resume=`` to a new
    client to receive exactly the events that were missed."""

    run_id: str
    last_event_id: int


Headers = Union[Mapping[str, str], Iterable[Tuple[str, str]]]
#: A file system path: ``str`` or ``os.PathLike`` (``pathlib.Path``).
PathArg = Union[str, "os.PathLike[str]"]

#: What an option turns into: the argument tuples of its setter's calls after the config
#: (none: the library's default stays; several: one call each, as for headers). Given the
#: option's value and every option passed, for options that go together.
Args = Callable[[Any, Mapping[str, Any]], Iterable[Tuple[Any, ...]]]


class Option(NamedTuple):
    """How one option reaches the library: its default and the ``tether_config_*``
    function (``None``: applied together with another option) called with ``args``."""

    default: Any
    setter: Optional[str]
    args: Args


def _ms(name: str, seconds: Optional[float], minimum: int = 1) -> Optional[int]:
    if seconds is None:
        return None
    ms = int(round(float(seconds) * 1000))
    if ms < minimum or ms > 0xFFFFFFFF:
        raise InvalidArgumentError(f"{name} must be between {minimum} ms and 2^32-1 ms")
    return ms


def _cstr(name: str, value: str) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    b = value.encode("utf-8")
    if b"\0" in b:
        raise InvalidArgumentError(f"{name} contains a NUL character")
    return b


def parse_protocol(protocol: Union[str, int]) -> int:
    """``"gomuks"`` / ``"rwws"`` (or ``TETHER_PROTOCOL_*``) to the library's value."""
    if isinstance(protocol, str):
        p = protocol.lower()
        if p == "gomuks":
            return _ffi.PROTOCOL_GOMUKS
        if p == "rwws":
            return _ffi.PROTOCOL_RWWS
        raise InvalidArgumentError(f"unknown protocol {protocol!r} (gomuks or rwws)")
    if protocol in (_ffi.PROTOCOL_GOMUKS, _ffi.PROTOCOL_RWWS):
        return int(protocol)
    raise InvalidArgumentError(f"unknown protocol {protocol!r}")


# -- how values become setter arguments ----------------------------------------------------


def _text(name: str) -> Args:
    return lambda v, _: [] if v is None else [(_cstr(name, v),)]


def _seconds(name: str) -> Args:
    return lambda v, _: [] if v is None else [(_ms(name, v),)]


def _count(name: str, ctype: Any) -> Args:
    """An integer for a setter taking ``ctype``, checked against its range: ctypes would
    wrap -1 into SIZE_MAX (no cap at all) without a word."""
    lo, hi = _ffi.int_range(ctype)

    def args(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
        if v is None:
            return []
        n = int(v)
        if not lo <= n <= hi:
            raise InvalidArgumentError(f"{name} must be between {lo} and {hi}, not {n}")
        return [(n,)]

    return args


def _flag(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    # False leaves the library's default (off) alone.
    return [(True,)] if v else []


#: The resolvers of live configs and clients, by the key their native context carries; the
#: library's destroy removes one once nothing can call it any more.
_resolvers: Dict[int, Callable[[str], Optional[str]]] = {}
_next_resolver = itertools.count(1)


# Marks a thread while it runs a resolver: the library waits for that call before it frees
# the client, so a close() from inside it must not wait for the client to be freed.
_resolving = threading.local()


def in_resolver() -> bool:
    """Whether this thread is inside a proxy resolver call."""
    return getattr(_resolving, "flag", False)


def _ask_resolver(ctx: Optional[int], url: bytes, answer: Optional[int]) -> int:
    resolve = _resolvers.get(ctx or 0)
    if resolve is None:
        return 0
    _resolving.flag = True
    try:
        proxy = resolve(url.decode("utf-8"))
    except BaseException:  # never let an exception reach the library's thread
        log.exception("tether: proxy_resolver failed")
        return int(Status.ERR_CONNECT)
    finally:
        _resolving.flag = False
    if proxy is None:
        return 0
    try:
        return int(_ffi.lib.tether_proxy_answer_set(answer, _cstr("proxy", proxy)))
    except Exception:  # not a str, a NUL in it, or not encodable
        # Not a passing failure: the same resolver answers the same way next time.
        log.error("tether: proxy_resolver returned %s, not a proxy URL", type(proxy).__name__)
        return int(Status.ERR_CONFIG)


def _forget_resolver(ctx: Optional[int]) -> None:
    _resolvers.pop(ctx or 0, None)


# Module-level thunks: never freed, so the library can call them at any time until destroy.
_RESOLVER_THUNK = _ffi.PROXY_RESOLVER_CB(_ask_resolver)
_FORGET_THUNK = _ffi.DESTROY_CB(_forget_resolver)


def _proxy_resolver(resolve: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if resolve is None:
        return []
    if not callable(resolve):
        raise TypeError(f"proxy_resolver must be callable, not {type(resolve).__name__}")
    key = next(_next_resolver)
    _resolvers[key] = resolve
    return [(_RESOLVER_THUNK, key, _FORGET_THUNK)]


def _basic_auth(username: Any, given: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    password = given.get("password")
    if username is None and password is None:
        return []
    if username is None or password is None:
        raise InvalidArgumentError("username and password go together")
    return [(_cstr("username", username), _cstr("password", password))]


def _backoff(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if v is None:
        return []
    lo, hi = v
    return [(_ms("reconnect_backoff", lo), _ms("reconnect_backoff", hi))]


def _resume(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if v is None:
        return []
    run_id, last = v
    ((last,),) = _count("last_received_event", _ffi.c_int64)(last, {})
    return [(_cstr("run_id", run_id), last)]


def _headers(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    items = v.items() if isinstance(v, Mapping) else (v or ())
    return [(_cstr("header name", k), _cstr("header value", val)) for k, val in items]


def _pem(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if v is None:
        return []
    pem = v.encode() if isinstance(v, str) else bytes(v)
    return [(pem, len(pem))]


def _pins(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if v is None:
        return []
    if isinstance(v, (str, bytes)):
        # One string would be iterated by character: almost surely a missing list.
        raise TypeError("pins must be a list of strings, not a single string")
    return [(_cstr("pin", p),) for p in v]


def _client_cert(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if v is None:
        return []
    try:
        cert, key = v
    except (TypeError, ValueError):
        raise TypeError("client_cert must be a (certificate PEM, key PEM) pair") from None
    (cert_pem, cert_len), = _pem(cert, {})
    (key_pem, key_len), = _pem(key, {})
    return [(cert_pem, cert_len, key_pem, key_len)]


def _in_process(v: Any, _: Mapping[str, Any]) -> Iterable[Tuple[Any, ...]]:
    if v is None:
        return []
    if isinstance(v, (str, bytes, os.PathLike)):
        raise TypeError("in_process must be a (library path, data root) pair, not one path")
    try:
        library, root = v
    except (TypeError, ValueError):
        raise TypeError("in_process must be a (library path, data root) pair") from None
    return [(_cstr("in_process library", os.fspath(library)),
             _cstr("in_process data root", os.fspath(root)))]


class Options(TypedDict, total=False):
    """The connection options that :class:`tether.Client` and
    :class:`tether.aio.AsyncClient` take as keyword arguments (all optional). A dict of
    them can be built ahead and passed with ``**``; type checkers check it."""

    protocol: Annotated[
        Union[str, int],
        Option("gomuks", "tether_config_set_protocol", lambda v, _: [(parse_protocol(v),)]),
    ]
    """``"gomuks"`` (JSON RPC, the default) or ``"rwws"`` (binary packets)."""

    in_process: Annotated[
        Optional[Tuple[PathArg, PathArg]],
        Option(None, "tether_config_set_in_process", _in_process),
    ]
    """gomuks: ``(library_path, data_root)`` to drive the gomuks backend bundled into this
    process instead of a websocket: ``library_path`` names ``libgomuksffi`` (gomuks
    ``pkg/ffi``, loaded when the client connects and never unloaded), ``data_root`` the
    backend's directory (config, database, cache, logs; created if missing). No URL is needed
    then (one given is ignored), and compression, pings, acks, resume, proxies, TLS settings
    and credentials do not apply. One in-process backend runs per process, and its data root
    is locked while the client runs: a second client raises :class:`tether.InUseError`. A
    failed start ends the client with :class:`tether.BackendStartError` (or its
    ``BackendDatabaseError``/``BackendAccountError``). ``pause``/``unpause``/
    ``reconnect_now`` raise :class:`tether.UnsupportedError`; media uploads and downloads
    (``upload_media``, ``download_media``) work only here."""

    token: Annotated[Optional[str], Option(None, "tether_config_set_token", _text("token"))]
    """gomuks: the ``gomuks_auth`` cookie token; rwws: the base64 access key."""

    username: Annotated[
        Optional[str], Option(None, "tether_config_set_basic_auth", _basic_auth)
    ]
    """gomuks: user for ``POST /_gomuks/auth`` (with ``password``)."""

    password: Annotated[Optional[str], Option(None, None, lambda v, _: [])]
    """gomuks: password (never logged); set together with ``username``."""

    compress: Annotated[
        bool, Option(True, "tether_config_set_compression", lambda v, _: [(bool(v),)])
    ]
    """gomuks: raw-deflate compression (default on)."""

    ping_interval: Annotated[
        Optional[float],
        Option(None, "tether_config_set_ping_interval_ms", _seconds("ping_interval")),
    ]
    """Keepalive interval in seconds (library default: gomuks 15, rwws 10)."""

    receive_timeout: Annotated[
        Optional[float],
        Option(None, "tether_config_set_receive_timeout_ms", _seconds("receive_timeout")),
    ]
    """Reconnect when nothing arrives for this many seconds."""

    pong_timeout: Annotated[
        Optional[float],
        Option(None, "tether_config_set_pong_timeout_ms", _seconds("pong_timeout")),
    ]
    """Seconds a ping may go unanswered (no byte arriving) before the link counts as dead
    (library default: gomuks 10, rwws 20); also the deadline of :meth:`Client.reconnect_now`'s
    probe."""

    request_timeout: Annotated[
        Optional[float],
        Option(None, "tether_config_set_request_timeout_ms", _seconds("request_timeout")),
    ]
    """Default per-request timeout in seconds (library default 60)."""

    connect_timeout: Annotated[
        Optional[float],
        Option(None, "tether_config_set_connect_timeout_ms", _seconds("connect_timeout")),
    ]
    """Bound on a connection's TCP connects and proxy tunnel (an ``https://`` proxy's TLS
    handshake included) once the names are resolved, in seconds (library default 10):
    addresses still silent then are given up and named in the error. It also bounds the
    gomuks login's answer once its connection is open. A whole attempt (name resolution,
    login, TLS and upgrade included), and a token renewal, is bounded by twice this."""

    reconnect_backoff: Annotated[
        Optional[Tuple[float, float]],
        Option(None, "tether_config_set_reconnect_backoff_ms", _backoff),
    ]
    """``(first, cap)`` reconnect delays in seconds."""

    max_message_bytes: Annotated[
        Optional[int], Option(
            None,
            "tether_config_set_max_message_bytes",
            _count("max_message_bytes", _ffi.c_size_t),
        )
    ]
    """Cap on one server message after decompression."""

    queue_capacity: Annotated[
        Optional[int], Option(
            None, "tether_config_set_queue_capacity", _count("queue_capacity", _ffi.c_size_t)
        )
    ]
    """Events the library buffers before it stops reading the socket."""

    max_unsent_bytes: Annotated[
        Optional[int], Option(
            None,
            "tether_config_set_max_unsent_bytes",
            _count("max_unsent_bytes", _ffi.c_size_t),
        )
    ]
    """Bytes of requests and packets that may wait to be written (default 32 MiB): those
    made while disconnected, or faster than the uplink carries. A call past it raises
    :class:`tether.SendBufferFullError` and takes nothing; one message larger than the limit
    is taken while nothing else waits. 0 is refused."""

    resume: Annotated[
        Optional[Union[ResumeState, Tuple[str, int]]],
        Option(None, "tether_config_set_resume_state", _resume),
    ]
    """A :class:`ResumeState` (or ``(run_id, last_event_id)``) from an earlier client: the
    backend replays exactly the events that client missed."""

    last_server_ts: Annotated[
        Optional[int], Option(
            None, "tether_config_set_last_server_ts", _count("last_server_ts", _ffi.c_int64)
        )
    ]
    """gomuks ``last_server_ts`` (only if the app persisted its state)."""

    prev_listener_id: Annotated[
        bool, Option(False, "tether_config_set_prev_listener_id", _flag)
    ]
    """gomuks: send ``prev_listener_id`` on reconnect."""

    headers: Annotated[Optional[Headers], Option(None, "tether_config_add_header", _headers)]
    """Extra headers for the websocket upgrade (e.g. ``Origin``): a mapping or pairs."""

    ca_pem: Annotated[
        Optional[Union[bytes, str]], Option(None, "tether_config_set_ca_pem", _pem)
    ]
    """Extra trusted CA certificates (PEM), added to the roots (webpki, or the OS store)."""

    crl_pem: Annotated[
        Optional[Union[bytes, str]], Option(None, "tether_config_set_crl_pem", _pem)
    ]
    """Certificate revocation lists (PEM ``X509 CRL`` blocks): a server certificate they revoke
    is refused with :class:`tether.CertificateError`, no retry. Only the leaf is checked, and
    only against these lists (a leaf whose issuer has none here is accepted; a list past its
    next update still revokes; one per issuer). They apply to an ``https://`` proxy's
    certificate too. tether fetches none. Needs TLS."""

    pins: Annotated[
        Optional[Iterable[str]], Option(None, "tether_config_add_pin_sha256", _pins)
    ]
    """Public-key pins: ``sha256/<base64>`` (or the bare base64) of the SHA-256 of the
    server certificate's SubjectPublicKeyInfo. With pins, one must match the key of the leaf
    or of a certificate on its verified path to a trusted root (an intermediate, the root),
    *in addition to* the normal chain and name checks (a pinned self-signed server still
    needs ``ca_pem``). A mismatch ends the client with :class:`tether.CertificateError`
    (``ERR_CERTIFICATE``, no retry). Needs a ``wss://``/``https://`` URL."""

    client_cert: Annotated[
        Optional[Tuple[Union[bytes, str], Union[bytes, str]]],
        Option(None, "tether_config_set_client_cert_pem", _client_cert),
    ]
    """``(certificate chain PEM, private key PEM)`` shown to a server that asks for a client
    certificate (mTLS). The key is a secret: never logged, never in an error. Needs a
    ``wss://``/``https://`` URL (:class:`tether.ConfigError` otherwise): only the server is
    shown it, never a proxy."""

    use_os_trust: Annotated[bool, Option(False, "tether_config_set_use_os_trust", _flag)]
    """Trust the operating system's certificate store instead of the built-in webpki roots
    (Linux: the OpenSSL locations, ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set)."""

    allow_insecure_credentials: Annotated[
        bool, Option(False, "tether_config_set_allow_insecure_credentials", _flag)
    ]
    """Allow credentials over plain ws/http to a non-loopback host."""

    proxy: Annotated[Optional[str], Option(None, "tether_config_set_proxy", _text("proxy"))]
    """The proxy for the websocket and the gomuks login alike: ``http://[user:pass@]host:port``
    (HTTP CONNECT), ``https://…`` (the same inside TLS to the proxy, verified like the server
    but without the pins, and shown no client certificate), ``socks5://…`` (name resolved locally) or ``socks5h://…`` (by the
    proxy);
    ``"direct"`` ignores the environment. ``None`` (default): ``https_proxy``/``http_proxy``/
    ``all_proxy`` and ``no_proxy`` decide, loopback hosts are never proxied from them. A proxy
    that refuses the credentials raises :class:`tether.UnauthorizedError` (no retry)."""

    proxy_resolver: Annotated[
        Optional[Callable[[str], Optional[str]]],
        Option(None, "tether_config_set_proxy_resolver", _proxy_resolver),
    ]
    """Asked before every connection (each websocket attempt and each gomuks login) which
    proxy to take, for settings that change while the app runs (a PAC script, the system's
    proxy settings): called with the URL about to be opened (``wss://host:port/path``,
    ``http[s]://host:port/_gomuks/auth``; no query), it returns a proxy URL as ``proxy`` takes
    it, ``"direct"``, or ``None`` to leave the decision to ``proxy`` and the environment. It
    runs on a thread of the library (holding the GIL while it runs), possibly on several at
    once, and may block; its time counts against the attempt's limit (twice
    ``connect_timeout``). An exception fails that attempt (logged to the ``tether`` logger;
    :class:`tether.ConnectError`, retried); an
    answer that is not a proxy URL (or not a ``str``) ends the client with
    :class:`tether.ConfigError`. One call per client runs at a time, and closing the client
    waits for a call in progress."""


#: Every option's :class:`Option`, in declaration order (the order they are applied in).
OPTIONS: Dict[str, Option] = {
    name: next(m for m in hint.__metadata__ if isinstance(m, Option))
    for name, hint in Options.__annotations__.items()
}


def option(options: Mapping[str, Any], name: str) -> Any:
    """The value of option ``name``: the one passed, else its default."""
    return options.get(name, OPTIONS[name].default)


def check_options(owner: str, options: Mapping[str, Any]) -> None:
    """Raises ``TypeError`` for a keyword that is not an option, as a Python signature
    would (``owner`` names the callable), with the closest option as a hint."""
    for name in options:
        if name not in OPTIONS:
            close = difflib.get_close_matches(name, OPTIONS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}")


def build_config(url: Optional[str], **options: Any) -> int:
    """Builds a ``tether_config`` (caller frees it) from keyword :class:`Options`; ``url``
    ``None`` sets none (an in-process client needs none; a websocket client is refused
    by ``tether_client_new``)."""
    check_options("build_config", options)
    lib = _ffi.lib
    check = _ffi.check
    cfg = _ffi.new_handle(lib.tether_config_new)
    try:
        if url is not None:
            check(lib.tether_config_set_url(cfg, _cstr("url", url)), "url")
        for name, opt in OPTIONS.items():
            if opt.setter is None:
                continue
            setter = getattr(lib, opt.setter)
            for args in opt.args(option(options, name), options):
                check(setter(cfg, *args), name)
        return cfg
    except BaseException:
        lib.tether_config_free(cfg)
        raise
