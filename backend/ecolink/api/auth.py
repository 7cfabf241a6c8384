"""Authentication: API keys (`Authorization: Bearer eco_...`) and console sessions
(the `eco_session` cookie).

`AuthMiddleware` runs before routing and before any body is read: a request to an
authenticated route without valid credentials gets 401 whatever it carries. It
leaves the account in `scope["state"]["account"]` for the handlers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ecolink.api.context import AppContext, get_ctx
from ecolink.errors import Unauthenticated
from ecolink.store import Account, to_us

SESSION_COOKIE = "eco_session"
# Routes anyone may call (GET/HEAD only).
OPEN_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})

_UNAUTHENTICATED = json.dumps(
    {"error": {"code": "unauthenticated",
               "message": "missing, wrong or revoked credentials"}}
).encode()


def _header(headers: Mapping[str, str] | list[tuple[bytes, bytes]], name: str) -> str | None:
    if isinstance(headers, list):
        raw = name.encode("latin-1")
        for k, v in headers:
            if k.lower() == raw:
                return v.decode("latin-1")
        return None
    return headers.get(name)


def bearer_token(headers: Mapping[str, str] | list[tuple[bytes, bytes]]) -> str | None:
    value = _header(headers, "authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def session_cookie(headers: Mapping[str, str] | list[tuple[bytes, bytes]]) -> str | None:
    value = _header(headers, "cookie")
    if not value:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(value)
    except CookieError:
        # A malformed neighbour cookie must not hide ours: fall back to a plain split.
        for part in value.split(";"):
            k, _, v = part.strip().partition("=")
            if k == SESSION_COOKIE and v:
                return v
        return None
    morsel = jar.get(SESSION_COOKIE)
    return morsel.value if morsel and morsel.value else None


def authenticate_headers(
    ctx: AppContext, headers: Mapping[str, str] | list[tuple[bytes, bytes]]
) -> Account | None:
    """The account the credentials in `headers` belong to, or None."""
    token = bearer_token(headers)
    if token is not None:
        acct = ctx.store.account_for_key(token)
        if acct is not None:
            return acct
    cookie = session_cookie(headers)
    if cookie is not None:
        return ctx.store.account_for_session(cookie, to_us(ctx.clock.now()))
    return None


def authenticate(conn: HTTPConnection) -> Account | None:
    """The account of an HTTP request or WebSocket (key or session cookie), or None."""
    state = conn.scope.get("state") or {}
    acct = state.get("account")
    if isinstance(acct, Account):
        return acct
    return authenticate_headers(get_ctx(conn), conn.scope.get("headers") or [])


def require_account(conn: HTTPConnection) -> Account:
    acct = authenticate(conn)
    if acct is None:
        raise Unauthenticated("missing, wrong or revoked credentials")
    return acct


async def require_ws_account(websocket: WebSocket) -> Account:
    """The WebSocket's account; without valid credentials answers HTTP 401 before the
    upgrade and raises Unauthenticated (the handler just returns)."""
    acct = authenticate(websocket)
    if acct is None:
        await deny_websocket(websocket.scope, websocket.receive, websocket.send)
        raise Unauthenticated("missing, wrong or revoked credentials")
    return acct


async def deny_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({
            "type": "websocket.http.response.start",
            "status": 401,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(_UNAUTHENTICATED)).encode()),
                        (b"www-authenticate", b'Bearer realm="ecolink"')],
        })
        await send({"type": "websocket.http.response.body", "body": _UNAUTHENTICATED})
    else:
        # The server cannot send an HTTP answer: refuse the handshake (403 on the wire).
        await send({"type": "websocket.close", "code": 1008})


class AuthMiddleware:
    """Checks credentials first, for every route but the open ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if (kind == "http" and scope["method"] in ("GET", "HEAD")
                and scope["path"] in OPEN_PATHS):
            await self.app(scope, receive, send)
            return
        ctx: AppContext = scope["app"].state.ctx
        acct = authenticate_headers(ctx, scope.get("headers") or [])
        if acct is None:
            if kind == "http":
                await _send_401(send)
            else:
                await deny_websocket(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        state["account"] = acct
        await self.app(scope, receive, send)


async def _send_401(send: Send) -> None:
    await send({
        "type": "http.response.start",
        "status": 401,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(_UNAUTHENTICATED)).encode()),
                    (b"www-authenticate", b'Bearer realm="ecolink"')],
    })
    await send({"type": "http.response.body", "body": _UNAUTHENTICATED})
