"""What every WebSocket route does before and after the upgrade: authenticate, run
the route's own checks, and refuse in api.md's error form (an HTTP answer instead
of the upgrade) when one fails; close quietly at the end."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.websockets import WebSocket, WebSocketState

from ecolink.api.auth import require_ws_account
from ecolink.api.context import AppContext, get_ctx
from ecolink.api.errors import runtime_failure_answer
from ecolink.errors import ApiError, Unauthenticated
from ecolink.runtime.base import RuntimeFailure
from ecolink.store import Account, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

STORE_UNREADABLE = {
    "error": {
        "code": "store_unavailable",
        "message": "the database cannot be read now (another process "
        "holds it, or the disk is slow); try again",
    }
}


async def before_upgrade(
    websocket: WebSocket, prepare: Callable[[AppContext, Account], Awaitable[T]]
) -> T | None:
    """Authenticate, then `prepare` what the socket will relay (find the cluster,
    parse the query, open the stream). Whatever fails is answered before the upgrade
    and gives None: the route then just returns."""
    try:
        account = await require_ws_account(websocket)
    except Unauthenticated:
        return None
    try:
        return await prepare(get_ctx(websocket), account)
    except Exception as exc:
        await deny_error(websocket, exc)
        return None


async def deny(ws: WebSocket, status: int, body: dict[str, Any]) -> None:
    """Answer an HTTP error instead of upgrading (api.md's error form)."""
    raw = json.dumps(body).encode()
    if "websocket.http.response" in (ws.scope.get("extensions") or {}):
        await ws.send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(raw)).encode()),
                ],
            }
        )
        await ws.send({"type": "websocket.http.response.body", "body": raw})
    else:
        await ws.close(code=1008 if status in (401, 404) else 1011)


async def deny_error(ws: WebSocket, exc: Exception) -> None:
    if isinstance(exc, ApiError):
        await deny(ws, exc.status, exc.body())
    elif isinstance(exc, RuntimeFailure):
        await deny(ws, *runtime_failure_answer(exc))
    elif isinstance(exc, StoreUnavailable):
        await deny(ws, 503, STORE_UNREADABLE)
    else:
        log.error("exec refused", exc_info=exc)
        await deny(
            ws,
            503,
            {"error": {"code": "runtime_unavailable", "message": "the exec could not be started"}},
        )


async def close_quietly(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason)


async def receive_data(ws: WebSocket) -> bytes | None:
    """The next message's payload (text as UTF-8; an empty text message carries
    nothing and is skipped); None once the client is gone."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        data: bytes | None = msg.get("bytes")
        if data is not None:
            return data
        text: str | None = msg.get("text")
        if text:
            return text.encode()
