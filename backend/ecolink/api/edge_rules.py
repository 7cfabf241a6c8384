"""The rules of ecolink's front door, as pure functions: which credential opens
which path, the console-session cookie in every form a Cookie header can carry, the
Content-Security-Policy of service-URL answers, the Origin check of cookie-opened
WebSockets, the host names of a separate service origin and the frame limits of each
WebSocket route.

Nothing here does I/O or keeps state, so every layer that forwards or authenticates
a request (the auth middleware, the service proxy, any front in front of them)
applies the same rules with the same parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

SESSION_COOKIE = "eco_session"

# --------------------------------------------------------------------------- service paths

_SERVICE_PATH = re.compile(r"^/gpu-clusters/([^/]+)/service(?:/|$)")


def service_ref(path: str) -> str | None:
    """The cluster reference (id or name, still percent-decoded as the path is) when
    `path` is a service URL `/gpu-clusters/{id}/service[/...]`, else None."""
    m = _SERVICE_PATH.match(path)
    return m.group(1) if m else None


def cookie_allowed(path: str) -> bool:
    """Whether the console-session cookie alone may authenticate a request to `path`:
    service URLs only. Pages served by replicas share the API's origin (unless a
    separate service origin is set), so the cookie must never open the API itself."""
    return service_ref(path) is not None


# --------------------------------------------------------------------------- cookies

# RFC 6265 cookie values hold no whitespace, comma, semicolon, backslash or double
# quote, so every one of those separates pairs, whatever the sender meant: browsers
# join with "; ", some intermediaries with "," and sloppy clients with a bare space.
_COOKIE_SEP = re.compile(r"[;,\s]+")


def cookie_pairs(values: Iterable[str]) -> list[tuple[str, str]]:
    """Every (name, value) pair of one or more Cookie header values, in order."""
    out: list[tuple[str, str]] = []
    for value in values:
        for part in _COOKIE_SEP.split(value):
            if not part:
                continue
            name, eq, val = part.partition("=")
            if len(val) >= 2 and val[0] == val[-1] == '"':
                val = val[1:-1]
            out.append((name, val if eq else ""))
    return out


def session_tokens(values: Iterable[str]) -> list[str]:
    """Every distinct `eco_session` value in the Cookie header values, in order."""
    seen: list[str] = []
    for name, val in cookie_pairs(values):
        if name == SESSION_COOKIE and val and val not in seen:
            seen.append(val)
    return seen


def session_token(values: Iterable[str]) -> str | None:
    """The one `eco_session` token the headers carry; None when there is none, or
    when they carry two different ones (no guessing which one the user meant)."""
    tokens = session_tokens(values)
    return tokens[0] if len(tokens) == 1 else None


def strip_session_cookie(values: Iterable[str]) -> str | None:
    """One Cookie header value holding every cookie of `values` but `eco_session`
    (parsed exactly as `session_tokens` parses; the name in any case goes too, so
    nothing that looks like ours reaches a replica), or None when nothing is left."""
    kept = [
        part
        for value in values
        for part in _COOKIE_SEP.split(value)
        if part and part.partition("=")[0].lower() != SESSION_COOKIE
    ]
    return "; ".join(kept) if kept else None


def mentions_session_cookie(value: str) -> bool:
    """Whether a Cookie header value may hold `eco_session` (in any case): when it
    cannot, it passes on as it came, without parsing."""
    return SESSION_COOKIE in value.lower()


def header_values(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> list[str]:
    """Every value of header `name` (lower-case) in ASGI raw headers."""
    return [v.decode("latin-1") for k, v in headers if k.lower() == name]


# --------------------------------------------------------------------------- CSP

# Service-URL answers run in a sandbox: scripts, forms, pop-ups and downloads work,
# but the page gets an opaque origin, so its scripts cannot read or send anything
# as the API's origin. Never `allow-same-origin` here.
SANDBOX_ALLOWANCES = (
    "allow-scripts",
    "allow-forms",
    "allow-popups",
    "allow-popups-to-escape-sandbox",
    "allow-modals",
    "allow-downloads",
    "allow-pointer-lock",
    "allow-presentation",
    "allow-orientation-lock",
)
SERVICE_CSP = "sandbox " + " ".join(SANDBOX_ALLOWANCES)
# On a separate service origin (one host name per cluster) the page's own origin is
# not the API's, so it may keep it.
SERVICE_ORIGIN_CSP = SERVICE_CSP + " allow-same-origin"


def service_csp(separate_origin: bool) -> str:
    return SERVICE_ORIGIN_CSP if separate_origin else SERVICE_CSP


# --------------------------------------------------------------------------- origins


def origin_of(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, lower-case, default ports dropped."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https", "ws", "wss") or not host:
        return None
    scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    if ":" in host:
        host = f"[{host}]"
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    """Whether a cookie-authenticated WebSocket upgrade with this `Origin` header may
    go on: no header (not a browser) or one of the `allowed` origins. `null` (a
    sandboxed page, a file) never is."""
    if origin is None:
        return True
    mine = origin_of(origin)
    if mine is None:
        return False
    return mine in {o for o in (origin_of(a) for a in allowed) if o}


# --------------------------------------------------------------------------- service origin

_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def normalize_suffix(suffix: str) -> str:
    """A `--service-domain` value as a bare lower-case DNS suffix; ValueError if not one."""
    s = suffix.strip().strip(".").lower()
    if not s or not all(_LABEL.match(p) for p in s.split(".")):
        raise ValueError(f"{suffix!r} is not a DNS name")
    return s


def host_name(host_header: str) -> str:
    """The host of a Host header, lower-case, without port."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h.split("]", 1)[0] + "]"
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


_ID_LABEL = re.compile(r"^gc-([0-9a-f]{16})$")


def service_host_ref(host_header: str | None, suffix: str | None) -> str | None:
    """The cluster id of a request to its service origin `gc-{hex}.{suffix}`, else None.
    (A cluster id `gc_{hex}` holds an underscore, which host names do not.)"""
    if not host_header or not suffix:
        return None
    host = host_name(host_header)
    tail = "." + suffix
    if not host.endswith(tail):
        return None
    m = _ID_LABEL.match(host[: -len(tail)])
    return f"gc_{m.group(1)}" if m else None


def service_host(cluster_id: str, suffix: str) -> str:
    """The host name of a cluster's service origin."""
    return f"{cluster_id.replace('_', '-')}.{suffix}"


def cookie_domain(host_header: str | None, suffix: str | None) -> str | None:
    """The Domain a console-session cookie gets so that browsers also send it to the
    service origins: the suffix, when the API itself is served under it."""
    if not host_header or not suffix:
        return None
    host = host_name(host_header)
    return suffix if host == suffix or host.endswith("." + suffix) else None


# --------------------------------------------------------------------------- WebSocket frames

KIB = 1024
MIB = 1024 * KIB
# Messages a client may send on each WebSocket route: the watch feed takes small
# focus messages; exec and kept sessions take stdin (plus one channel byte); the
# service URL passes a replica's own protocol through.
WATCH_FRAME_LIMIT = 8 * KIB
EXEC_FRAME_LIMIT = MIB + 1
SERVICE_FRAME_LIMIT = MIB
# Port-forward carries a TCP stream in chunks of 64 KiB (the client's read size).
PORTFORWARD_FRAME_LIMIT = 64 * KIB
DEFAULT_FRAME_LIMIT = 8 * KIB
# What a replica may send to a client through a service WebSocket, per message (the
# backend holds at most a few such messages per socket).
SERVICE_UPSTREAM_FRAME_LIMIT = 16 * MIB
SERVICE_UPSTREAM_QUEUE = 4
# The most any route takes: what the server itself buffers at most per message.
MAX_FRAME = max(
    WATCH_FRAME_LIMIT,
    EXEC_FRAME_LIMIT,
    SERVICE_FRAME_LIMIT,
    DEFAULT_FRAME_LIMIT,
    PORTFORWARD_FRAME_LIMIT,
)

_EXEC_PATH = re.compile(r"^/gpu-clusters/[^/]+/(replicas/[^/]+/exec|sessions/[^/]+/attach)$")
_PORTFORWARD_PATH = re.compile(r"^/gpu-clusters/[^/]+/replicas/[^/]+/portforward$")


def is_portforward(path: str) -> bool:
    """Whether `path` is a port-forward WebSocket (one forwarded TCP connection)."""
    return _PORTFORWARD_PATH.match(path) is not None


def frame_limit(path: str) -> int:
    """The largest message a client may send on the WebSocket at `path`."""
    if path == "/watch":
        return WATCH_FRAME_LIMIT
    if _EXEC_PATH.match(path):
        return EXEC_FRAME_LIMIT
    if _PORTFORWARD_PATH.match(path):
        return PORTFORWARD_FRAME_LIMIT
    if service_ref(path) is not None:
        return SERVICE_FRAME_LIMIT
    return DEFAULT_FRAME_LIMIT


# WebSockets one account may hold open at once (watch feeds, terminals, service
# sockets together); the next one is refused with a clear answer.
MAX_WEBSOCKETS_PER_ACCOUNT = 64
# Port-forward WebSockets (one per forwarded TCP connection) have a cap of their own:
# a forward carries many connections at once, and each holds little (messages of at
# most 64 KiB, checked frame by frame, one chunk in flight each way).
MAX_PORTFORWARDS_PER_ACCOUNT = 1024
