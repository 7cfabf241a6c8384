"""The public service URL: `{base}/gpu-clusters/{id}/service/{path}`.

Every method, and WebSocket upgrades, go to the endpoint port of the cluster's ready
replicas in turn (round-robin), through `Runtime.service_target` (a loopback address
that reaches the replica: its own port locally, a port-forward on Kubernetes).
Request and response bodies stream in both directions without being held whole.
The prefix up to `/service` is stripped; `X-Forwarded-For/-Proto/-Host/-Prefix` are
set; `Authorization` and the `eco_session` cookie never reach the replica (the auth
middleware adds the Content-Security-Policy sandbox to every answer). Answers:
401 (the auth middleware, before anything else), 404 no such cluster or no endpoint,
503 no ready replica or none reachable. A replica's own answers pass unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import h11
import websockets
from fastapi import APIRouter
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection

from ecolink.api.common import account_of
from ecolink.api.context import AppContext, get_ctx
from ecolink.api.deps import OwnedCluster
from ecolink.api.edge_rules import (
    SERVICE_UPSTREAM_FRAME_LIMIT,
    SERVICE_UPSTREAM_QUEUE,
    strip_session_cookie,
)
from ecolink.api.proxy_pool import ProxyState, UpstreamConn, UpstreamError
from ecolink.api.ws import before_upgrade, close_quietly, deny_error
from ecolink.runtime.base import HostPort, RuntimeUnavailable
from ecolink.store import Account
from ecolink.streams import ServiceTargets

log = logging.getLogger(__name__)

router = APIRouter()

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "authorization",
    }
)
WS_SKIP = HOP_BY_HOP | {
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
    "sec-websocket-accept",
    "content-length",
}
RESPONSE_SKIP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def _forward_headers(
    conn: Request | WebSocket, skip: frozenset[str], prefix: str
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    # Headers the client named in Connection are hop-by-hop too.
    named = {h.strip().lower() for h in conn.headers.get("connection", "").split(",")}
    prior_xff = []
    # Every Cookie header at once, parsed as the auth middleware parses it: the
    # session token goes in whatever form it came.
    cookies = strip_session_cookie(conn.headers.getlist("cookie"))
    if cookies:
        out.append(("Cookie", cookies))
    for k, v in conn.headers.items():
        lk = k.lower()
        if lk in skip or lk in named or lk == "cookie":
            continue
        if lk == "x-forwarded-for":
            prior_xff.append(v)
            continue
        if lk.startswith("x-forwarded-"):
            continue  # ours replace whatever the client claimed
        out.append((k, v))
    client = conn.client.host if conn.client else "unknown"
    out.append(("X-Forwarded-For", ", ".join([*prior_xff, client])))
    scheme = conn.url.scheme
    out.append(("X-Forwarded-Proto", {"ws": "http", "wss": "https"}.get(scheme, scheme)))
    host = conn.headers.get("host")
    if host:
        out.append(("X-Forwarded-Host", host))
    out.append(("X-Forwarded-Prefix", prefix))
    return out


def _prefix(conn: Request | WebSocket, ref: str) -> str:
    if _on_service_origin(conn):
        return ""  # the service origin serves the cluster at its root
    return f"/gpu-clusters/{quote(ref, safe='')}/service"


def _on_service_origin(conn: Request | WebSocket) -> bool:
    return bool((conn.scope.get("state") or {}).get("service_origin"))


def _upstream_path(conn: Request | WebSocket, ref: str) -> str:
    # The raw path keeps the client's percent-encoding: cut the prefix off it by
    # segments ("", "gpu-clusters", ref, "service", rest).
    raw = conn.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(conn.scope["path"])
    path = path.split("?", 1)[0]
    parts = path.split("/", 4)
    rest = "/" + parts[4] if len(parts) == 5 else "/"
    qs = conn.scope.get("query_string") or b""
    return rest + ("?" + qs.decode("latin-1") if qs else "")


@router.api_route(
    "/gpu-clusters/{id}/service",
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
    include_in_schema=False,
)
async def service_root(request: Request, cluster: OwnedCluster) -> Response:
    # Only relative links resolve right under a trailing slash (the cluster is looked
    # up first: another account's is 404).
    qs = request.url.query
    return RedirectResponse(request.url.path + "/" + (f"?{qs}" if qs else ""), status_code=307)


async def proxy_http(request: Request) -> Response:
    ctx = get_ctx(request)
    ref = request.path_params["id"]
    found = await ctx.streams.service_targets(account_of(request).id, ref)
    headers = _forward_headers(request, HOP_BY_HOP, _prefix(request, ref))
    path = _upstream_path(request, ref)
    length = request.headers.get("content-length")
    chunked = "transfer-encoding" in request.headers
    if chunked:
        # The body's length is not known: send it on chunked, whatever it came as.
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Transfer-Encoding", "chunked"))
    has_body = chunked or (length is not None and length != "0")
    state = ctx.proxy
    body_started = False
    last_error: Exception | None = None
    for target in found.targets:
        for fresh in (False, True):
            try:
                conn, reused = await state.connect(target.host, target.port, fresh)
            except UpstreamError as exc:
                last_error = exc
                break  # this replica is unreachable: the next one
            try:
                body_started = body_started or has_body
                response = await _exchange(conn, request, target, headers, path, has_body)
            except UpstreamError as exc:
                conn.close()
                last_error = exc
                # A reused connection may have been closed by the replica meanwhile:
                # try a fresh one, unless the body is gone already.
                if reused and not body_started:
                    continue
                raise RuntimeUnavailable(
                    "the replica behind the service URL broke the exchange"
                ) from exc
            return _respond(state, target, conn, response, request.method)
        if body_started:
            break
    log.info("service %s unreachable: %s", found.cluster_id, last_error)
    raise RuntimeUnavailable("no replica behind the service URL could be reached")


async def _exchange(
    conn: UpstreamConn,
    request: Request,
    target: HostPort,
    headers: list[tuple[str, str]],
    path: str,
    has_body: bool,
) -> Any:
    """Send the request (streaming its body) and read the response head."""
    try:
        h = [("Host", f"{target.host}:{target.port}"), *headers]
        if not has_body and request.method not in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"):
            h.append(("Content-Length", "0"))
        conn.writer.write(conn.h11.send(h11.Request(method=request.method, target=path, headers=h)))
        if has_body:
            async for chunk in request.stream():
                if chunk:
                    conn.writer.write(conn.h11.send(h11.Data(data=chunk)))
                    await conn.writer.drain()
        conn.writer.write(conn.h11.send(h11.EndOfMessage()))
        await conn.writer.drain()
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.InformationalResponse):
                continue  # 100 Continue and friends: we already sent the body
            if isinstance(event, h11.Response):
                return event
            raise UpstreamError(f"unexpected {type(event).__name__} from the replica")
    except (OSError, h11.ProtocolError, asyncio.IncompleteReadError) as exc:
        raise UpstreamError(str(exc) or type(exc).__name__) from exc


# Answers up to this size (by Content-Length) are relayed without a watcher for the
# client's disconnection: they end soon anyway. Longer or open-ended ones use
# StreamingResponse, which stops pulling from the replica when the client goes.
SMALL_BODY = 1024 * 1024


class _SmallRelay(Response):
    def __init__(
        self, status: int, headers: list[tuple[bytes, bytes]], body: AsyncIterator[bytes]
    ) -> None:
        self.status_code = status
        self.raw_headers = headers
        self.body_iter = body
        self.background = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iter:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _respond(
    state: ProxyState, target: HostPort, conn: UpstreamConn, response: Any, method: str
) -> Response:
    raw_headers: list[tuple[bytes, bytes]] = []
    length: int | None = None
    for k, v in response.headers:
        name = k.lower()
        if name.decode("latin-1") in RESPONSE_SKIP:
            continue
        if name == b"content-length":
            with contextlib.suppress(ValueError):
                length = int(v)
        raw_headers.append((name, v))

    async def body() -> AsyncIterator[bytes]:
        done = False
        try:
            while True:
                event = await conn.next_event()
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    done = True
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return
        except (OSError, h11.ProtocolError) as exc:
            # Headers are out: all we can do is end the body early.
            log.info("upstream ended early: %s", exc)
        finally:
            if done:
                state.release(target.host, target.port, conn)
            else:
                conn.close()

    if length is not None and length <= SMALL_BODY:
        return _SmallRelay(response.status_code, raw_headers, body())
    resp_headers = MutableHeaders(raw=raw_headers)
    return StreamingResponse(body(), status_code=response.status_code, headers=resp_headers)


class _ProxyEndpoint:
    """A plain ASGI endpoint (no FastAPI request parsing) that takes every method
    there is; ApiErrors go to the app's handlers like any route's."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        request = Request(scope, receive, send)
        response = await proxy_http(request)
        await response(scope, receive, send)


router.routes.append(
    Route(
        "/gpu-clusters/{id}/service/{path:path}",
        _ProxyEndpoint(),
        methods=None,
        include_in_schema=False,
    )
)


@router.websocket("/gpu-clusters/{id}/service/{path:path}")
async def proxy_ws(websocket: WebSocket, id: str, path: str) -> None:
    async def prepare(ctx: AppContext, account: Account) -> ServiceTargets:
        return await ctx.streams.service_targets(account.id, id)

    found = await before_upgrade(websocket, prepare)
    if found is None:
        return
    upstream = await _connect_upstream(websocket, id, found.targets)
    if upstream is None:
        return
    await websocket.accept(subprotocol=upstream.subprotocol)
    await _relay_ws(websocket, upstream)


async def _connect_upstream(
    websocket: WebSocket, ref: str, targets: list[HostPort]
) -> ClientConnection | None:
    """A WebSocket to the first replica that takes it; None when none did (the client
    has its refusal: the replica's own HTTP answer, or 503)."""
    headers = _forward_headers(websocket, WS_SKIP, _prefix(websocket, ref))
    offered = list(websocket.scope.get("subprotocols") or [])
    upath = _upstream_path(websocket, ref)
    for target in targets:
        try:
            return await websockets.connect(
                f"ws://{target.host}:{target.port}{upath}",
                additional_headers=headers,
                subprotocols=offered or None,
                max_size=SERVICE_UPSTREAM_FRAME_LIMIT,
                max_queue=SERVICE_UPSTREAM_QUEUE,
                compression=None,
                open_timeout=10,
                ping_interval=None,
                proxy=None,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            log.info("service websocket to %s:%s failed: %s", target.host, target.port, exc)
            if isinstance(exc, websockets.InvalidStatus):
                # The replica answered the upgrade with an HTTP error: pass it on.
                r = exc.response
                await _deny_raw(
                    websocket,
                    r.status_code,
                    bytes(r.body or b""),
                    r.headers.get("content-type", "text/plain"),
                )
                return None
            continue
    await deny_error(
        websocket, RuntimeUnavailable("no replica behind the service URL could be reached")
    )
    return None


async def _relay_ws(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Messages both ways until either side closes; the replica's close code goes on
    to the client."""

    async def client_to_upstream() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                await upstream.close(code=msg.get("code", 1000) or 1000)
                return
            if msg.get("bytes") is not None:
                await upstream.send(msg["bytes"])
            elif msg.get("text") is not None:
                await upstream.send(msg["text"])

    async def upstream_to_client() -> None:
        try:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                else:
                    await websocket.send_text(message)
        except websockets.ConnectionClosed:
            pass
        code = upstream.close_code or 1000
        if code in (1005, 1006, 1015):
            code = 1000 if code == 1005 else 1011
        await close_quietly(websocket, code, upstream.close_reason or "")

    tasks = [asyncio.create_task(client_to_upstream()), asyncio.create_task(upstream_to_client())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await upstream.close()
        await close_quietly(websocket)


async def _deny_raw(ws: WebSocket, status: int, body: bytes, ctype: str) -> None:
    if "websocket.http.response" in (ws.scope.get("extensions") or {}):
        await ws.send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", ctype.encode("latin-1")),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await ws.send({"type": "websocket.http.response.body", "body": body})
    else:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(code=1011)
