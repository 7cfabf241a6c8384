"""The front's cookie rules: the Cookie parser is `ecolink.api.edge_rules`' (the one
the API authenticates with), so the token that authenticates a service request is
exactly the one removed before it goes on; plus the scope check of a replica's
Set-Cookie.
"""

from __future__ import annotations

from ecolink.api.edge_rules import (
    SESSION_COOKIE,
    mentions_session_cookie,
    session_token,
    session_tokens,
    strip_session_cookie,
)

__all__ = [
    "SESSION_COOKIE",
    "session_token",
    "session_tokens",
    "strip_session",
    "strip_session_values",
    "set_cookie_allowed",
]


def strip_session(value: str) -> str | None:
    """One Cookie header value without our session cookie (None when nothing is left).

    A value that holds no session cookie passes byte for byte; one that does is
    rebuilt from the pairs `session_tokens` reads."""
    if not mentions_session_cookie(value):
        return value
    return strip_session_cookie([value])


def strip_session_values(values: list[str]) -> list[str]:
    """The Cookie header values to send on for `values` (every Cookie header of one
    request): as they came when none may hold our cookie, else one header built by
    the parser that authenticates."""
    if not any(mentions_session_cookie(v) for v in values):
        return values
    stripped = strip_session_cookie(values)
    return [stripped] if stripped else []


def set_cookie_allowed(value: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a replica's Set-Cookie may reach the client: never our session
    cookie, never a cookie scoped outside the service prefix (a Path above it, or
    a Domain that widens it to other hosts). On a separate service origin the
    prefix is "" and every Path is the replica's."""
    parts = value.split(";")
    name = parts[0].partition("=")[0].strip()
    if not name or name.lower() == SESSION_COOKIE:
        return False
    for attr in parts[1:]:
        key, _, val = attr.partition("=")
        key = key.strip().lower()
        if key == "domain":
            return False
        if key == "path":
            path = val.strip()
            if not any(path == p or path.startswith(p + "/") for p in prefixes):
                return False
    return True
