"""Port-forward: one WebSocket per TCP connection to a port of a replica.

`GET /gpu-clusters/{id}/replicas/{replica}/portforward?port=P`, upgraded to
WebSocket. Authorised like exec (an API key of the cluster's account; 401, 404
before the upgrade). Each is one forwarded TCP connection, counted against a cap
of its own per account (`--max-portforwards-per-account`, 429 beyond), not the
cap of the account's other WebSockets. Before the upgrade the backend connects to
the port; a port nothing in the replica listens on is `409` (field `port`), a runtime that
cannot be reached `503`. After it, binary frames carry the bytes both ways; an
empty binary frame from the client ends its direction (half-close); when the
replica closes the connection the server closes the WebSocket (1000), and an
error there closes it with 1011 and the reason. Where the runtime learns only
after the upgrade that nothing listens (kubernetes), the server closes with 4409
and the reason. Each direction holds at most
one chunk (64 KiB) in flight: reads wait for the other side to take the last.

The local runtime reaches only ports that the replica's own processes listen
on; the kubernetes runtime goes through `pods/portforward`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from fastapi import APIRouter
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket

from ecolink.api.context import AppContext
from ecolink.api.deps import OwnedCluster
from ecolink.api.errors import error_response, refusals
from ecolink.api.ws import before_upgrade, close_quietly, receive_data
from ecolink.errors import Conflict, InvalidField
from ecolink.runtime.base import PortNotListening, RuntimeUnavailable
from ecolink.store import Account
from ecolink.streams import FORWARD_CHUNK as CHUNK
from ecolink.streams import Forward

log = logging.getLogger(__name__)

router = APIRouter(tags=["exec"])

PATH = "/gpu-clusters/{id}/replicas/{replica}/portforward"
# Close code when the replica refused the connection after the upgrade (the
# kubernetes runtime cannot tell before): nothing listens on the port.
CLOSE_REFUSED = 4409


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


@router.websocket(PATH)
async def portforward_ws(websocket: WebSocket, id: str, replica: str) -> None:
    async def prepare(ctx: AppContext, account: Account) -> tuple[Forward, int]:
        cluster = await ctx.streams.cluster(account.id, id)
        port = _port(websocket)
        try:
            return await ctx.streams.open_forward(cluster, replica, port), port
        except PortNotListening as exc:
            raise Conflict(str(exc), "port") from None
        except ConnectionRefusedError:
            raise Conflict(f"nothing in {replica} listens on port {port}", "port") from None
        except (TimeoutError, OSError) as exc:
            raise RuntimeUnavailable(
                f"{replica} port {port} cannot be reached: {exc or 'timed out'}"
            ) from None

    opened = await before_upgrade(websocket, prepare)
    if opened is None:
        return
    forward, port = opened
    await websocket.accept()

    def refusal() -> str | None:
        # The kubernetes runtime learns only after the upgrade that nothing listens.
        detail = forward.refused()
        if detail is None:
            return None
        log.info("port-forward to %s port %s refused: %s", replica, port, detail)
        return f"nothing in {replica} listens on port {port}"

    await relay(websocket, forward.reader, forward.writer, refusal)


async def relay(
    ws: WebSocket,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    refusal: Callable[[], str | None] | None = None,
) -> None:
    """Bytes both ways until either side is done. A connection that ends before its
    first byte because the replica's side refused it closes with CLOSE_REFUSED."""

    async def upstream() -> None:
        sent = False
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            sent = True
            await ws.send_bytes(data)
        why = refusal() if refusal is not None and not sent else None
        if why is not None:
            await close_quietly(ws, CLOSE_REFUSED, why[:120])
        else:
            await close_quietly(ws, 1000, "closed by the replica")

    async def downstream() -> None:
        while (data := await receive_data(ws)) is not None:
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


@router.get(
    PATH,
    summary="Port-forward (WebSocket): one TCP connection to a port of a replica",
    responses={
        426: {"description": "not a WebSocket upgrade"},
        429: {
            "description": "the account holds `--max-portforwards-per-account` port-forward "
            "connections already (`too_many_portforwards`); they are counted apart from "
            "its other WebSockets"
        },
        **refusals(401, 404, 409, 422, 503),
    },
    description=(
        "Upgrade to WebSocket with `?port=P`. Binary frames carry the bytes of one "
        "TCP connection both ways; an empty binary frame from the client ends its "
        "direction (half-close). The server closes with 1000 when the replica "
        "closes the connection, 1011 (reason in words) when it fails, 4409 (reason in "
        "words) when the kubernetes runtime finds after the upgrade that nothing "
        "listens on the port. Refused before "
        "the upgrade: 401, 404 (cluster or replica), 422 (port), 409 (nothing in the "
        "replica listens on the port; the local runtime reaches only ports the "
        "replica's own processes listen on), 429 (too many port-forward connections "
        "open; a cap of their own, apart from the account's other WebSockets), 503 "
        "(runtime unreachable). A plain GET is 426."
    ),
    openapi_extra={
        "parameters": [
            {
                "name": "port",
                "in": "query",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 65535},
            }
        ]
    },
)
async def portforward_doc(request: Request, cluster: OwnedCluster, replica: str) -> Response:
    # As for the upgrade: another account's cluster is 404 (OwnedCluster) before
    # anything about the port is said.
    _port(request)
    return error_response(
        426, "invalid_request", "port-forward is a WebSocket: send Upgrade: websocket"
    )
