"""The public service URL: `{base}/gpu-clusters/{id}/service/{path}`.

Every method, and WebSocket upgrades, go to the endpoint port of the cluster's ready
replicas in turn (round-robin), through `Runtime.service_target` (a loopback address
that reaches the replica: its own port locally, a port-forward on Kubernetes).
Request and response bodies stream in both directions without being held whole.
The prefix up to `/service` is stripped; `X-Forwarded-For/-Proto/-Host/-Prefix` are
set; `Authorization` and the `eco_session` cookie never reach the replica. Answers:
401 (the auth middleware, before anything else), 404 no such cluster or no endpoint,
503 no ready replica or none reachable. A replica's own answers pass unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import websockets
from fastapi import APIRouter
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from ecolink.api.auth import SESSION_COOKIE, require_ws_account
from ecolink.api.context import AppContext, get_ctx
from ecolink.api.exec import close_quietly, deny_error
from ecolink.errors import NotFound, RuntimeUnavailableError, Unauthenticated
from ecolink.runtime.base import HostPort, ReplicaNotFound, RuntimeUnavailable

log = logging.getLogger(__name__)

router = APIRouter()

HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade", "host", "authorization",
})
WS_SKIP = HOP_BY_HOP | {
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
    "sec-websocket-protocol", "sec-websocket-accept", "content-length",
}
RESPONSE_SKIP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "trailers", "transfer-encoding", "upgrade",
})


class _State:
    """Per-app proxy state: the upstream HTTP client and round-robin counters."""

    def __init__(self) -> None:
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(connect=5.0, read=None, write=None, pool=30.0),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            follow_redirects=False,
            trust_env=False,
        )
        self.counters: dict[str, itertools.count[int]] = {}

    def next(self, cluster_id: str) -> int:
        c = self.counters.get(cluster_id)
        if c is None:
            c = self.counters[cluster_id] = itertools.count()
        return next(c)


def _state(ctx: AppContext) -> _State:
    st = ctx.extra.get("proxy")
    if st is None:
        st = ctx.extra["proxy"] = _State()
    assert isinstance(st, _State)
    return st


def _strip_session_cookie(value: str) -> str | None:
    kept = [p for p in (x.strip() for x in value.split(";"))
            if p and p.split("=", 1)[0].strip() != SESSION_COOKIE]
    return "; ".join(kept) if kept else None


def _forward_headers(conn: Request | WebSocket, skip: frozenset[str], prefix: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    # Headers the client named in Connection are hop-by-hop too.
    named = {h.strip().lower() for h in conn.headers.get("connection", "").split(",")}
    prior_xff = []
    for k, v in conn.headers.items():
        lk = k.lower()
        if lk in skip or lk in named:
            continue
        if lk == "cookie":
            stripped = _strip_session_cookie(v)
            if stripped:
                out.append((k, stripped))
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


async def _targets(ctx: AppContext, account_id: str, ref: str) -> tuple[str, list[HostPort]]:
    """The cluster's id and its ready replicas' addresses, starting at the next in turn."""
    cluster = ctx.service.get_cluster(account_id, ref)
    if cluster.status == "terminated" or cluster.endpoint_port is None:
        raise NotFound("the cluster has no service endpoint")
    try:
        ready = [r for r in ctx.runtime.replicas(cluster.id) if r.ready]
    except RuntimeUnavailable as exc:
        raise RuntimeUnavailableError(f"the runtime cannot be reached: {exc}") from None
    if not ready:
        raise RuntimeUnavailableError("no ready replica behind the service URL")
    ready.sort(key=lambda r: r.index)
    start = _state(ctx).next(cluster.id) % len(ready)
    order = ready[start:] + ready[:start]
    out = []
    for r in order:
        try:
            out.append(await ctx.runtime.service_target(cluster.id, r.name, cluster.endpoint_port))
        except (ReplicaNotFound, RuntimeUnavailable):
            continue
    if not out:
        raise RuntimeUnavailableError("no ready replica behind the service URL")
    return cluster.id, out


def _prefix(ref: str) -> str:
    return f"/gpu-clusters/{quote(ref, safe='')}/service"


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


@router.api_route("/gpu-clusters/{id}/service", methods=["GET", "HEAD", "POST", "PUT", "PATCH",
                  "DELETE", "OPTIONS"], include_in_schema=False)
async def service_root(request: Request, id: str) -> Response:
    # Only relative links resolve right under a trailing slash.
    acct = request.state.account
    get_ctx(request).service.get_cluster(acct.id, id)
    qs = request.url.query
    return RedirectResponse(request.url.path + "/" + (f"?{qs}" if qs else ""), status_code=307)


async def proxy_http(request: Request) -> Response:
    ctx = get_ctx(request)
    ref = request.path_params["id"]
    acct = request.state.account
    cluster_id, targets = await _targets(ctx, acct.id, ref)
    headers = _forward_headers(request, HOP_BY_HOP, _prefix(ref))
    path = _upstream_path(request, ref)
    has_body = ("content-length" in request.headers and request.headers["content-length"] != "0") \
        or "transfer-encoding" in request.headers
    client = _state(ctx).client
    body_started = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal body_started
        body_started = True
        async for chunk in request.stream():
            if chunk:
                yield chunk

    last_error: Exception | None = None
    for target in targets:
        url = f"http://{target.host}:{target.port}{path}"
        req = client.build_request(
            request.method, url, headers=headers, content=body() if has_body else None
        )
        try:
            upstream = await client.send(req, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            last_error = exc
            if body_started:
                break  # the body is partly consumed: another replica cannot get it whole
            continue
        except httpx.HTTPError as exc:
            last_error = exc
            break
        resp_headers = [(k, v) for k, v in upstream.headers.multi_items()
                        if k.lower() not in RESPONSE_SKIP]
        return StreamingResponse(
            _relay(upstream),
            status_code=upstream.status_code,
            headers=_header_dict(resp_headers),
            background=BackgroundTask(upstream.aclose),
        )
    log.info("service %s unreachable: %s", cluster_id, last_error)
    raise RuntimeUnavailableError("no replica behind the service URL could be reached")


def _header_dict(items: list[tuple[str, str]]) -> Any:
    # StreamingResponse takes a mapping; repeated headers (Set-Cookie) must survive.
    from starlette.datastructures import MutableHeaders

    h = MutableHeaders()
    for k, v in items:
        h.append(k, v)
    return h


async def _relay(upstream: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        # Headers are out: all we can do is end the body early.
        log.info("upstream ended early: %s", exc)
    finally:
        await upstream.aclose()


router.add_api_route(
    "/gpu-clusters/{id}/service/{path:path}",
    proxy_http,
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
             "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK", "REPORT",
             "SEARCH", "QUERY"],
    include_in_schema=False,
)


@router.websocket("/gpu-clusters/{id}/service/{path:path}")
async def proxy_ws(websocket: WebSocket, id: str, path: str) -> None:
    try:
        acct = await require_ws_account(websocket)
    except Unauthenticated:
        return
    ctx = get_ctx(websocket)
    try:
        _, targets = await _targets(ctx, acct.id, id)
    except Exception as exc:
        await deny_error(websocket, exc)
        return
    headers = _forward_headers(websocket, WS_SKIP, _prefix(id))
    offered = list(websocket.scope.get("subprotocols") or [])
    upath = _upstream_path(websocket, id)
    upstream = None
    for target in targets:
        try:
            upstream = await websockets.connect(
                f"ws://{target.host}:{target.port}{upath}",
                additional_headers=headers,
                subprotocols=offered or None,  # type: ignore[arg-type]
                max_size=None,
                compression=None,
                open_timeout=10,
                ping_interval=None,
                proxy=None,
            )
            break
        except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
            log.info("service websocket to %s:%s failed: %s", target.host, target.port, exc)
            if isinstance(exc, websockets.InvalidStatus):
                # The replica answered the upgrade with an HTTP error: pass it on.
                r = exc.response
                await _deny_raw(websocket, r.status_code, r.body or b"",
                                r.headers.get("content-type", "text/plain"))
                return
            continue
    if upstream is None:
        await deny_error(websocket, RuntimeUnavailableError(
            "no replica behind the service URL could be reached"))
        return
    await websocket.accept(subprotocol=upstream.subprotocol)

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
        await ws.send({"type": "websocket.http.response.start", "status": status,
                       "headers": [(b"content-type", ctype.encode("latin-1")),
                                   (b"content-length", str(len(body)).encode())]})
        await ws.send({"type": "websocket.http.response.body", "body": body})
    else:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.close(code=1011)
