"""The operating system's proxy settings as a ready ``proxy_resolver``."""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
import urllib.request
from typing import Optional

log = logging.getLogger("tether")

# urllib's keys for the websocket's and the login's schemes.
_KEYS = {"wss": "https", "https": "https", "ws": "http", "http": "http"}
_DEFAULT_PORTS = {"wss": 443, "https": 443, "ws": 80, "http": 80}
# The proxy kinds urllib reports, as tether takes them. urllib writes a Windows "socks="
# entry as socks4:// (and socks://) into the http and https keys.
_SCHEMES = {
    "http": "http",
    "https": "https",
    "socks5": "socks5",
    "socks5h": "socks5h",
    "socks": "socks5",
    "socks4": "socks5",
    "socks4a": "socks5h",
}


def system_proxy(url: str) -> Optional[str]:
    """The proxy the system's settings give for ``url``, read at each call: a ready
    ``proxy_resolver`` (``Client(..., proxy_resolver=tether.system_proxy)``) for the settings
    a desktop user changes while the app runs.

    Reads what :func:`urllib.request.getproxies` reads beyond the environment: the macOS
    network settings or the Windows registry (Internet Options). ``https`` serves ``wss://``
    and ``https://``, ``http`` serves ``ws://`` and ``http://``; an entry without a scheme
    is an HTTP proxy. A Windows ``socks=`` entry (SOCKS4 to Windows itself) is taken as
    SOCKS5, which tether speaks and most SOCKS servers speak too. A host the settings exempt
    (their bypass list, see :func:`urllib.request.proxy_bypass`; on Windows that check may
    look the name up) is reached ``"direct"``; an IPv6 literal is not matched against the
    list, whose simple-host rule urllib applies to anything without a dot.

    Returns ``None``, leaving the decision to tether's own rules (the ``proxy`` option, then
    the ``*_proxy`` variables, which tether reads with networks in ``no_proxy``), when any
    ``*_proxy`` environment variable is set (``no_proxy`` alone included: urllib then reads
    only the environment), when the settings name no proxy tether can use for the scheme
    (one of another kind is logged), and for loopback hosts. It runs no PAC script: a
    system set to automatic configuration gives ``None`` unless it also names a proxy."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if not host or _is_loopback(host) or urllib.request.getproxies_environment():
        return None
    key = _KEYS.get(parts.scheme)
    found = urllib.request.getproxies().get(key) if key else None
    if not found:
        return None
    if "://" not in found:
        found = "http://" + found
    scheme, rest = found.split("://", 1)
    usable = _SCHEMES.get(scheme.lower())
    if usable is None:
        log.warning("tether.system_proxy: the system's %s proxy is %s://, which tether cannot "
                    "use; leaving the decision to tether's own rules", key, scheme)
        return None
    if ":" not in host:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
        if urllib.request.proxy_bypass(f"{host}:{port}"):
            return "direct"
    return f"{usable}://{rest}"


def _is_loopback(host: str) -> bool:
    # tether's own rule: loopback is never proxied from the settings around it.
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
