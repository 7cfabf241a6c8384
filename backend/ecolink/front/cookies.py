"""One Cookie parser for authenticating and for stripping our session cookie.

Clients and intermediaries join cookies with `;`, `,` or plain spaces, and may
send several Cookie headers. Both the session lookup and the removal use
`cookie_pairs`, so a token that one of them sees cannot escape the other.
"""

from __future__ import annotations

import re

SESSION_COOKIE = "eco_session"
_SEP = re.compile(r"[;,\s]+")
_SESSION_LOWER = SESSION_COOKIE.lower()


def cookie_pairs(value: str) -> list[tuple[str, str]]:
    """(name, value) for every cookie in one Cookie header value, in order."""
    out = []
    for token in _SEP.split(value):
        if not token:
            continue
        name, _, val = token.partition("=")
        out.append((name.strip(), val.strip()))
    return out


def _is_session(name: str) -> bool:
    return name.lower() == _SESSION_LOWER


def session_tokens(values: list[str]) -> list[str]:
    """Every `eco_session` value in the given Cookie header values."""
    return [v for value in values for n, v in cookie_pairs(value) if n == SESSION_COOKIE and v]


def strip_session(value: str) -> str | None:
    """The Cookie header value without our session cookie (None when nothing is left).

    A header that holds no session cookie passes byte for byte; one that does is
    rebuilt from the same pairs the session lookup reads."""
    pairs = cookie_pairs(value)
    if not any(_is_session(n) for n, _ in pairs):
        return value
    kept = [f"{n}={v}" if v or "=" in _raw_token(value, n) else n
            for n, v in pairs if not _is_session(n)]
    return "; ".join(kept) if kept else None


def _raw_token(value: str, name: str) -> str:
    for token in _SEP.split(value):
        if token.partition("=")[0].strip() == name:
            return token
    return ""


def set_cookie_allowed(value: str, prefixes: tuple[str, ...]) -> bool:
    """Whether a replica's Set-Cookie may reach the client: never our session
    cookie, never a cookie scoped outside the service prefix (a Path above it, or
    a Domain that widens it to other hosts)."""
    parts = value.split(";")
    name = parts[0].partition("=")[0].strip()
    if not name or _is_session(name):
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
