"""The operating system's proxy settings as a ready ``proxy_resolver``."""

from __future__ import annotations

import ipaddress
import urllib.parse
import urllib.request
from typing import Optional

# urllib's keys for the websocket's and the login's schemes.
_KEYS = {"wss": "https", "https": "https", "ws": "http", "http": "http"}


def system_proxy(url: str) -> Optional[str]:
    """The proxy the system's settings give for ``url``, read at each call: a ready
    ``proxy_resolver`` (``Client(..., proxy_resolver=tether.system_proxy)``) for the settings
    a desktop user changes while the app runs.

    Reads what :func:`urllib.request.getproxies` reads beyond the environment: the macOS
    network settings or the Windows registry (Internet Options). ``https`` serves ``wss://``
    and ``https://``, ``http`` serves ``ws://`` and ``http://``, then a Windows ``socks``
    entry (taken as SOCKS5); an entry without a scheme is an HTTP proxy. A host the settings
    exempt (their bypass list, see :func:`urllib.request.proxy_bypass`) is reached
    ``"direct"``.

    Returns ``None``, leaving the decision to tether's own rules (the ``proxy`` option, then
    the ``*_proxy`` variables, which tether reads with networks in ``no_proxy``), when a
    ``*_proxy`` environment variable is set, when the settings name no proxy for the scheme,
    and for loopback hosts. It runs no PAC script: a system set to automatic configuration
    gives ``None`` unless it also names a proxy."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if not host or _is_loopback(host) or urllib.request.getproxies_environment():
        return None
    proxies = urllib.request.getproxies()
    key = _KEYS.get(parts.scheme)
    found = proxies.get(key) if key else None
    if not found and proxies.get("socks"):
        found = "socks5://" + _without_scheme(proxies["socks"])
    if not found:
        return None
    # proxy_bypass takes "host" or "host:port".
    port = parts.port
    if urllib.request.proxy_bypass(f"{host}:{port}" if port else host):
        return "direct"
    if "://" not in found:
        return "http://" + found
    if found.startswith("socks://"):
        return "socks5://" + _without_scheme(found)
    return found


def _without_scheme(proxy: str) -> str:
    return proxy.split("://", 1)[-1]


def _is_loopback(host: str) -> bool:
    # tether's own rule: loopback is never proxied from the settings around it.
    name = host.rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
