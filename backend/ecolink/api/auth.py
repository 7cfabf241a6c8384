"""Authentication: API keys (`Authorization: Bearer eco_...`) everywhere, and console
sessions (the `eco_session` cookie) on service URLs only (rules in `edge_rules`).

`AuthMiddleware` runs before routing and before any body is read: a request to an
authenticated route without valid credentials gets 401 whatever it carries. It
leaves the account in `scope["state"]["account"]` for the handlers.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from ecolink.api import edge_rules
from ecolink.api.context import AppContext, get_ctx
from ecolink.api.edge_rules import SESSION_COOKIE as SESSION_COOKIE
from ecolink.errors import Unauthenticated
from ecolink.store import Account, StoreUnavailable, to_us

# Routes anyone may call (GET/HEAD only).
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})

_UNAUTHENTICATED = json.dumps(
    {"error": {"code": "unauthenticated", "message": "missing, wrong or revoked credentials"}}
).encode()

Headers = Mapping[str, str] | list[tuple[bytes, bytes]]


def _header(headers: Headers, name: str) -> str | None:
    if isinstance(headers, list):
        raw = name.encode("latin-1")
        for k, v in headers:
            if k.lower() == raw:
                return v.decode("latin-1")
        return None
    return headers.get(name)


def _all(headers: Headers, name: str) -> list[str]:
    if isinstance(headers, list):
        return edge_rules.header_values(headers, name.encode("latin-1"))
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name)
    return [value] if value is not None else []


def bearer_token(headers: Headers) -> str | None:
    value = _header(headers, "authorization")
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def session_cookie(headers: Headers) -> str | None:
    """The `eco_session` token of the Cookie headers, in any form they carry it
    (edge_rules parses; None when absent or ambiguous)."""
    return edge_rules.session_token(_all(headers, "cookie"))


@dataclass(frozen=True, slots=True)
class Credentials:
    account: Account
    via: str  # "key" or "cookie"
    key_id: int | None  # the API key's id, when a key authenticated


def credentials(ctx: AppContext, headers: Headers, path: str) -> Credentials | None:
    """Who the credentials in `headers` belong to, for a request to `path`: an API key
    anywhere; the console-session cookie on service URLs only. Reads the store here:
    for a reader thread (the event loop awaits `find_credentials`)."""
    token = bearer_token(headers)
    cookie = session_cookie(headers) if edge_rules.cookie_allowed(path) else None
    return _lookup(ctx, token, cookie)


async def find_credentials(ctx: AppContext, headers: Headers, path: str) -> Credentials | None:
    """`credentials`, its store reads in one of the store's reader threads, or from
    memory while the database has not changed since (`Store.cached_read`: a revoked
    key or session fails within its change watch, as at the fronts). A request
    without a token or cookie reads nothing."""
    token = bearer_token(headers)
    cookie = session_cookie(headers) if edge_rules.cookie_allowed(path) else None
    if token is None and cookie is None:
        return None
    return await ctx.store.cached_read(
        ("credentials", token, cookie), lambda: _lookup(ctx, token, cookie)
    )


def _lookup(ctx: AppContext, token: str | None, cookie: str | None) -> Credentials | None:
    if token is not None:
        found = ctx.store.authenticate_key(token)
        if found is not None:
            return Credentials(found[1], "key", found[0])
    if cookie is not None:
        acct = ctx.store.account_for_session(cookie, to_us(ctx.clock.now()))
        if acct is not None:
            return Credentials(acct, "cookie", None)
    return None


def authenticate_headers(ctx: AppContext, headers: Headers, path: str = "") -> Account | None:
    """The account the credentials in `headers` belong to, or None."""
    found = credentials(ctx, headers, path)
    return found.account if found else None


def authenticate(conn: HTTPConnection) -> Account | None:
    """The account of an HTTP request or WebSocket, or None."""
    state = conn.scope.get("state") or {}
    acct = state.get("account")
    if isinstance(acct, Account):
        return acct
    return authenticate_headers(
        get_ctx(conn), conn.scope.get("headers") or [], conn.scope.get("path", "")
    )


def require_account(conn: HTTPConnection) -> Account:
    acct = authenticate(conn)
    if acct is None:
        raise Unauthenticated("missing, wrong or revoked credentials")
    return acct


async def require_ws_account(websocket: WebSocket) -> Account:
    """The WebSocket's account; without valid credentials answers HTTP 401 before the
    upgrade and raises Unauthenticated (the handler just returns)."""
    acct = (websocket.scope.get("state") or {}).get("account")
    if not isinstance(acct, Account):
        found = await find_credentials(
            get_ctx(websocket),
            websocket.scope.get("headers") or [],
            websocket.scope.get("path", ""),
        )
        acct = found.account if found else None
    if acct is None:
        await deny_websocket(websocket.scope, websocket.receive, websocket.send)
        raise Unauthenticated("missing, wrong or revoked credentials")
    return acct


async def deny_websocket(
    scope: Scope, receive: Receive, send: Send, status: int = 401, body: bytes = _UNAUTHENTICATED
) -> None:
    """Refuse a WebSocket upgrade with an HTTP answer in the error form."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="ecolink"'))
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        # The server cannot send an HTTP answer: refuse the handshake (403 on the wire).
        await send({"type": "websocket.close", "code": 1008})


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


def _allowed_origins(ctx: AppContext, scope: Scope) -> list[str]:
    """The origins a cookie-authenticated WebSocket may come from: the API's own (as
    this request reached it, and its public URL) and the cluster's service origin."""
    headers = scope.get("headers") or []
    scheme = "https" if ctx.tls or scope.get("scheme") in ("https", "wss") else "http"
    out = []
    host = _header(headers, "host")
    if host:
        out.append(f"{scheme}://{host}")
    if ctx.public_url:
        out.append(ctx.public_url)
    return out


class AuthMiddleware:
    """Checks credentials first, for every route but the open ones; on a service host
    of the separate service origin, maps the request onto the cluster's service URL;
    caps each account's WebSockets and the size of what a client sends on each."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        ctx: AppContext = scope["app"].state.ctx
        headers = scope.get("headers") or []
        state: dict[str, Any] = scope.setdefault("state", {})
        service_origin = False
        if ctx.service_domain:
            ref = edge_rules.service_host_ref(_header(headers, "host"), ctx.service_domain)
            if ref is not None:
                _onto_service_path(scope, ref)
                service_origin = True
        state["service_origin"] = service_origin
        if (
            not service_origin
            and kind == "http"
            and scope["method"] in ("GET", "HEAD")
            and scope["path"] in OPEN_PATHS
        ):
            await self.app(scope, receive, send)
            return
        if kind == "http" and edge_rules.service_ref(scope["path"]) is not None:
            send = _with_csp(send, edge_rules.service_csp(service_origin).encode())
        try:
            found = await find_credentials(ctx, headers, scope["path"])
        except StoreUnavailable:
            await _send_store_unavailable(scope, receive, send)
            return
        if found is None:
            if kind == "http":
                await _send_401(send)
            else:
                await deny_websocket(scope, receive, send)
            return
        state["account"] = found.account
        state["auth"] = found.via
        state["key_id"] = found.key_id
        if kind == "http":
            await self.app(scope, receive, send)
            return
        await self._websocket(ctx, found, scope, receive, send)

    async def _websocket(
        self, ctx: AppContext, found: Credentials, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if found.via == "cookie":
            origin = _header(scope.get("headers") or [], "origin")
            allowed = _allowed_origins(ctx, scope)
            if not edge_rules.origin_allowed(origin, allowed):
                await deny_websocket(
                    scope,
                    receive,
                    send,
                    403,
                    _error(
                        "forbidden_origin",
                        f"a console session opens WebSockets from {allowed[0] if allowed else 'this origin'} only",
                    ),
                )
                return
        acct_id = found.account.id
        if edge_rules.is_portforward(scope["path"]):
            # Forwarded TCP connections: a cap of their own, so that a forward carrying
            # many connections neither hits the general cap nor crowds out the rest.
            counts = ctx.portforwards_open
            cap = ctx.max_portforwards_per_account
            code = "too_many_portforwards"
            what = f"{cap} port-forward connections"
        else:
            counts = ctx.websockets_open
            cap = ctx.max_websockets_per_account
            code = "too_many_websockets"
            what = f"{cap} WebSockets"
        if counts.get(acct_id, 0) >= cap:
            await deny_websocket(
                scope,
                receive,
                send,
                429,
                _error(code, f"this account has {what} open, the most allowed; close one first"),
            )
            return
        counts[acct_id] = counts.get(acct_id, 0) + 1
        limit = edge_rules.frame_limit(scope["path"])
        closed = False

        async def guarded_send(message: Message) -> None:
            if closed:
                return  # we closed the socket for the app: what it sends goes nowhere
            await send(message)

        async def limited_receive() -> Message:
            nonlocal closed
            message = await receive()
            if message["type"] != "websocket.receive" or closed:
                return message
            data = message.get("bytes")
            text = message.get("text")
            size = len(data) if data is not None else 0
            if text is not None:
                size = len(text) if len(text) * 4 <= limit else len(text.encode("utf-8"))
            if size <= limit:
                return message
            closed = True
            with contextlib.suppress(Exception):
                await send(
                    {
                        "type": "websocket.close",
                        "code": 1009,
                        "reason": f"message too big: at most {limit} bytes here",
                    }
                )
            return {"type": "websocket.disconnect", "code": 1009}

        try:
            await self.app(scope, limited_receive, guarded_send)
        finally:
            left = counts.get(acct_id, 1) - 1
            if left > 0:
                counts[acct_id] = left
            else:
                counts.pop(acct_id, None)


def _with_csp(send: Send, policy: bytes) -> Send:
    """`send` that puts the service URL's Content-Security-Policy first on the answer
    (browsers enforce every policy they get, so a replica's own adds, never loosens)."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [(b"content-security-policy", policy), *message.get("headers", [])],
            }
        await send(message)

    return sending


def _onto_service_path(scope: Scope, ref: str) -> None:
    """A request to a cluster's service origin is its service URL, path and all."""
    prefix = f"/gpu-clusters/{ref}/service"
    scope["path"] = prefix + scope["path"]
    raw = scope.get("raw_path")
    if raw:
        scope["raw_path"] = prefix.encode("latin-1") + raw


async def _send_401(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_UNAUTHENTICATED)).encode()),
                (b"www-authenticate", b'Bearer realm="ecolink"'),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _UNAUTHENTICATED})


_STORE_UNREADABLE = json.dumps(
    {
        "error": {
            "code": "store_unavailable",
            "message": "the database cannot be read now (another process holds it, or "
            "the disk is slow); nothing was changed, try again",
        }
    }
).encode()


async def _send_store_unavailable(scope: Scope, receive: Receive, send: Send) -> None:
    """The credentials could not be checked: the store cannot be read in time."""
    if scope["type"] == "websocket":
        await deny_websocket(scope, receive, send, 503, _STORE_UNREADABLE)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(_STORE_UNREADABLE)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _STORE_UNREADABLE})
