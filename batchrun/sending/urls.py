"""Where requests go: a base URL checked so the key cannot leak, a Redis URL checked, and
URLs shown without their password. Used by the settings, which check both URLs once.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse

from batchrun.errors import UsageError

LIMITER_SCHEMES = ("redis", "rediss", "unix")
# "scheme://user:password@": the password of a URL no parser takes.
_USERINFO_PASSWORD = re.compile(r"(//[^/@:]*:)[^@/]*@")


def check_base_url(url: str, *, allow_insecure_http: bool, label: str = "--base-url") -> None:
    """Refuse URLs that would leak the key: plain http to a non-loopback host.

    Parsed with yarl, the parser aiohttp sends with, so the host checked here is the host
    the key would go to. ``label`` names where the URL came from (``--base-url``, or
    ``$OPENAI_BASE_URL``).
    """
    from yarl import URL

    try:
        parts = URL(url)
    except (ValueError, TypeError):
        raise UsageError(f"{label} {mask_url(url)!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        raise UsageError(f"{label} {mask_url(url)!r} is not an http(s) URL")
    if parts.raw_user is not None or parts.raw_password is not None:
        # aiohttp cannot send both it and the key's Authorization header: every row
        # would fail, and the settings file and journal would keep the password.
        raise UsageError(
            f"{label} {mask_url(url)}: a base URL cannot carry a user or password (the API "
            "key goes in the Authorization header: set OPENAI_API_KEY, or --api-key-env)"
        )
    if parts.scheme == "http" and not allow_insecure_http and not is_loopback(parts.host):
        raise UsageError(
            f"{label} {mask_url(url)}: plain http would send the API key unencrypted to "
            f"{parts.host}; use https, or pass --allow-insecure-http"
        )
    if parts.raw_query_string or parts.raw_fragment:
        raise UsageError(
            f"{label} {mask_url(url)!r}: a base URL cannot carry a query or fragment "
            "(request paths are appended to it)"
        )


def check_limiter_url(url: str, label: str = "--limiter-url") -> None:
    """Refuse a ``--limiter-url`` that is not a Redis URL (messages never show a password)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in LIMITER_SCHEMES:
        raise UsageError(
            f"{label} {mask_url(url)}: use redis://HOST:PORT/DB "
            "(or rediss:// for TLS, unix:///path/to/socket)"
        )


def mask_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***``."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # a bad port, say: the password is still found where it sits
        return _USERINFO_PASSWORD.sub(r"\1***@", url)
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (localhost or a loopback address)."""
    if host.casefold() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
