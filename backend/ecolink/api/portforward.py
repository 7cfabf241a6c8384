"""Port-forward: one WebSocket per TCP connection to a port of a replica.

`GET /gpu-clusters/{id}/replicas/{replica}/portforward?port=P`, upgraded to
WebSocket. Authorised like exec (an API key of the cluster's account; 401, 404
before the upgrade). Before the upgrade the backend connects to the port; a
port nothing in the replica listens on is `409` (field `port`), a runtime that
cannot be reached `503`. After it, binary frames carry the bytes both ways; an
empty binary frame from the client ends its direction (half-close); when the
replica closes the connection the server closes the WebSocket (1000), and an
error there closes it with 1011 and the reason. Each direction holds at most
one chunk (64 KiB) in flight: reads wait for the other side to take the last.

The local runtime reaches only ports that the replica's own processes listen
on; the kubernetes runtime goes through `pods/portforward`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import APIRouter
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from ecolink.api.auth import require_ws_account
from ecolink.api.context import get_ctx
from ecolink.api.errors import error_response, refusals
from ecolink.api.exec import close_quietly, deny, deny_error
from ecolink.errors import InvalidField, Unauthenticated
from ecolink.runtime.base import PortNotListening

log = logging.getLogger(__name__)

router = APIRouter(tags=["exec"])

PATH = "/gpu-clusters/{id}/replicas/{replica}/portforward"
CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 10.0


def _port(ws: HTTPConnection) -> int:
    raw = ws.query_params.get("port")
    if raw is None:
        raise InvalidField("port is required", "port")
    try:
        port = int(raw)
    except ValueError:
        raise InvalidField("port must be an integer", "port") from None
    if not 1 <= port <= 65535:
        raise InvalidField("port must be 1..65535", "port")
    return port


def _conflict(message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": "conflict", "message": message, "field": "port"}}


@router.websocket(PATH)
async def portforward_ws(websocket: WebSocket, id: str, replica: str) -> None:
    try:
        acct = await require_ws_account(websocket)
    except Unauthenticated:
        return
    ctx = get_ctx(websocket)
    try:
        cluster = ctx.service.get_cluster(acct.id, id)
        port = _port(websocket)
        target = await ctx.runtime.forward_target(cluster.id, replica, port)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, limit=CHUNK), CONNECT_TIMEOUT_S)
    except PortNotListening as exc:
        await deny(websocket, 409, _conflict(str(exc)))
        return
    except ConnectionRefusedError:
        await deny(websocket, 409, _conflict(f"nothing in {replica} listens on port {port}"))
        return
    except (TimeoutError, OSError) as exc:
        await deny(websocket, 503, {"error": {
            "code": "runtime_unavailable",
            "message": f"{replica} port {port} cannot be reached: {exc or 'timed out'}"}})
        return
    except Exception as exc:
        await deny_error(websocket, exc)
        return
    await websocket.accept()
    await relay(websocket, reader, writer)


async def relay(ws: WebSocket, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    """Bytes both ways until either side is done."""

    async def upstream() -> None:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            await ws.send_bytes(data)
        await close_quietly(ws, 1000, "closed by the replica")

    async def downstream() -> None:
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes")
            if data is None:
                text = msg.get("text")
                data = text.encode() if text else None
            if data is None:
                continue
            if not data:  # the client's end of input
                if writer.can_write_eof():
                    writer.write_eof()
                continue
            writer.write(data)
            await writer.drain()

    up = asyncio.create_task(upstream())
    down = asyncio.create_task(downstream())
    try:
        done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception()
            if exc is not None and not isinstance(exc, ConnectionError | RuntimeError):
                log.info("port-forward ended: %s", exc)
            if exc is not None:
                await close_quietly(ws, 1011, f"connection to the replica failed: {exc}"[:120])
        if up in done:
            # The replica closed: give the client a moment to read the close.
            down.cancel()
        else:
            up.cancel()
    finally:
        for t in (up, down):
            t.cancel()
            with contextlib.suppress(BaseException):
                await t
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
        await close_quietly(ws)


@router.get(PATH, summary="Port-forward (WebSocket): one TCP connection to a port of a replica",
            responses={426: {"description": "not a WebSocket upgrade"},
                       **refusals(401, 404, 409, 422, 503)},
            description=(
                "Upgrade to WebSocket with `?port=P`. Binary frames carry the bytes of one "
                "TCP connection both ways; an empty binary frame from the client ends its "
                "direction (half-close). The server closes with 1000 when the replica "
                "closes the connection, 1011 (reason in words) when it fails. Refused before "
                "the upgrade: 401, 404 (cluster or replica), 422 (port), 409 (nothing in the "
                "replica listens on the port; the local runtime reaches only ports the "
                "replica's own processes listen on), 503 (runtime unreachable). A plain GET "
                "is 426."),
            openapi_extra={"parameters": [{
                "name": "port", "in": "query", "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 65535}}]})
async def portforward_doc(request: Request, id: str, replica: str) -> Response:
    # As for the upgrade: another account's cluster is 404 before anything about the
    # port is said.
    get_ctx(request).service.get_cluster(request.state.account.id, id)
    _port(request)
    return error_response(426, "invalid_request",
                          "port-forward is a WebSocket: send Upgrade: websocket")
