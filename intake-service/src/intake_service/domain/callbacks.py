"""Where a ticket's own `callback_url` may point.

Approved answers are POSTed to it, signed with the webhook secret every channel shares. Unchecked,
it let anyone holding a channel token make intake post to any address intake can reach: the cloud
metadata service (`http://169.254.169.254/…`), internal services. `INTAKE_CALLBACK_HOSTS` lists the
hosts such URLs may name (`*.example.com`: any name under example.com, not example.com itself); in
production they must be https, and with no list there a ticket's own URL is refused altogether (the
per-channel `INTAKE_CHANNEL_CALLBACKS` are the way). Outside production, with no list, any http(s)
URL is taken, as before.

URLs are read by httpx's parser, the one that sends the webhook: a second parser could read
`http://allowed.example\\@internal/` as another host than the one posted to.
"""

from __future__ import annotations

import ipaddress

import httpx

# What an entry of the list may not hold: a scheme, a port, a path, credentials, a space.
_NOT_IN_A_HOST = frozenset("/?#@:[]*\\ \t")


def _ip(text: str) -> str | None:
    """The address in canonical form, or None for a name."""
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        return None


def _ascii_host(name: str) -> str:
    """A host name as httpx sends it: IDNA-encoded, lower case, without a trailing dot."""
    raw = httpx.URL(f"http://{name}/").raw_host.decode("ascii")
    return raw.lower().rstrip(".")


def host_pattern(entry: str) -> str:
    """An `INTAKE_CALLBACK_HOSTS` entry as it is matched: a host name (IDNA, lower case) or an IP
    address, or `*.` and a domain. ValueError for anything else (a URL, a port, a bare `*`)."""
    text = entry.strip().lower().rstrip(".")
    if (address := _ip(text)) is not None:
        return address
    wildcard = text.startswith("*.")
    name = text[2:] if wildcard else text
    if not name or any(ch in _NOT_IN_A_HOST for ch in name) or name.startswith("."):
        raise ValueError(
            f"{entry.strip()!r} is not a host name: give names such as hooks.example.com or "
            "*.example.com, without scheme, port or path"
        )
    try:
        host = _ascii_host(name)
    except (httpx.InvalidURL, UnicodeError, ValueError) as exc:
        raise ValueError(f"{entry.strip()!r} is not a host name: {exc}") from exc
    return f"*.{host}" if wildcard else host


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether `host` (as `host_pattern` normalises it) is one the patterns name."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def callback_url_refusal(url: str, *, allowed_hosts: tuple[str, ...], production: bool) -> str | None:
    """Why answers may not be posted to `url` (a ticket's own callback URL), or None if they may."""
    if not allowed_hosts:
        if production:
            return (
                "a ticket's own callback_url is not accepted in production unless INTAKE_CALLBACK_HOSTS "
                "lists its host; answers go to the channel's configured callback"
            )
        return None
    try:
        parsed = httpx.URL(url)
        raw_host = parsed.raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return "the callback_url cannot be read as a URL"
    if parsed.scheme not in ("http", "https"):
        return "the callback_url must be an http(s) URL"
    if production and parsed.scheme != "https":
        return "the callback_url must be https in production"
    host = _ip(raw_host) or raw_host.lower().rstrip(".")
    if not host_allowed(host, allowed_hosts):
        return f"the callback_url's host {host!r} is not one of INTAKE_CALLBACK_HOSTS"
    return None
