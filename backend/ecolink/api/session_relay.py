"""Attaching to (or ending) a kept session that another instance holds: this instance opens the
same WebSocket on the holder (the caller's own credentials and chosen subprotocol
passed on) and relays frames both ways, close codes included.

Nothing is queued without bound: each direction sends one frame before it reads the
next, and the connection to the holder buffers at most `MAX_QUEUE` frames of
`MAX_FRAME` bytes. A holder that cannot be reached is answered before the upgrade
(503 `runtime_unavailable`); a holder that refuses (the session ended meanwhile) is
answered with its own refusal; one that goes away mid-session closes the caller
with 1011 and says so."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from ecolink.api.ws import close_quietly
from ecolink.errors import ApiError
from ecolink.runtime.base import RuntimeUnavailable
from ecolink.streams import HeldElsewhere

log = logging.getLogger(__name__)

# A request passed on by another instance carries this header (its id): it is never
# passed on again.
FORWARDED_HEADER = "x-eco-forwarded-from"
CONNECT_TIMEOUT_S = 5.0
MAX_FRAME = 1024 * 1024
MAX_QUEUE = 4
# The caller's headers that the holder needs: its credentials, and the origin its
# cookie is checked against.
_PASSED_ON = ("authorization", "cookie", "origin")
# Close codes that may be sent in a close frame (RFC 6455 7.4).
_SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014}
CLOSE_HOLDER_GONE = 1011


class HolderRefused(ApiError):
    """The holder answered the upgrade with an error: passed on as it said it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        err = body.get("error") if isinstance(body, dict) else None
        message = str(err.get("message", "")) if isinstance(err, dict) else ""
        super().__init__(message or "the instance holding the session refused")
        self.status = status
        self._body = body

    def body(self) -> dict[str, Any]:  # type: ignore[override]
        return self._body


def forwarded(conn: HTTPConnection) -> bool:
    """Whether another instance passed this request on (never passed on again)."""
    return FORWARDED_HEADER in conn.headers


def _target(websocket: WebSocket, address: str) -> str:
    base = address.rstrip("/")
    if base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    return base + websocket.scope["path"] + (f"?{query}" if query else "")


async def open_on_holder(
    websocket: WebSocket, held: HeldElsewhere, subprotocol: str | None, instance_id: str
) -> ClientConnection:
    """The same attach, opened on the instance holding the session (before the
    caller's upgrade is answered, so that a failure is an HTTP answer)."""
    headers = [(k, v) for k, v in websocket.headers.items() if k.lower() in _PASSED_ON]
    headers.append((FORWARDED_HEADER, instance_id))
    try:
        return await connect(
            _target(websocket, held.address),
            additional_headers=headers,
            subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
            compression=None,
            proxy=None,
            open_timeout=CONNECT_TIMEOUT_S,
            close_timeout=CONNECT_TIMEOUT_S,
            max_size=MAX_FRAME,
            max_queue=MAX_QUEUE,
            user_agent_header=None,
        )
    except InvalidStatus as exc:
        response = exc.response
        try:
            body = json.loads(response.body or b"")
        except ValueError:
            body = None
        if response.status_code >= 500 or not isinstance(body, dict):
            raise RuntimeUnavailable(
                f"the instance holding the session ({held.instance_id} at {held.address}) "
                f"answered {response.status_code}"
            ) from None
        raise HolderRefused(response.status_code, body) from None
    except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
        raise RuntimeUnavailable(
            f"the instance holding the session ({held.instance_id} at {held.address}) "
            f"cannot be reached: {exc or type(exc).__name__}"
        ) from None


async def end_on_holder(request: Request, held: HeldElsewhere, instance_id: str) -> Response:
    """`DELETE` of a session that another instance holds, passed on to it; its
    answer is this one's."""
    headers = {k: v for k, v in request.headers.items() if k.lower() in _PASSED_ON}
    headers[FORWARDED_HEADER] = instance_id
    url = held.address.rstrip("/") + request.url.path
    try:
        async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT_S * 2, trust_env=False) as client:
            answer = await client.delete(url, headers=headers)
    except httpx.HTTPError as exc:
        raise RuntimeUnavailable(
            f"the instance holding the session ({held.instance_id} at {held.address}) "
            f"cannot be reached: {exc or type(exc).__name__}"
        ) from None
    if answer.status_code >= 500:
        raise RuntimeUnavailable(
            f"the instance holding the session ({held.instance_id} at {held.address}) "
            f"answered {answer.status_code}"
        )
    return Response(
        answer.content,
        status_code=answer.status_code,
        media_type=answer.headers.get("content-type", "application/json"),
    )


async def relay(websocket: WebSocket, upstream: ClientConnection) -> None:
    """Accept the caller with the holder's subprotocol and replay header, then relay
    frames both ways until either side closes; the other side is closed with the
    same code."""
    replay = upstream.response.headers.get("x-eco-replay-bytes") if upstream.response else None
    extra = [(b"x-eco-replay-bytes", replay.encode())] if replay else []
    try:
        await websocket.accept(subprotocol=upstream.subprotocol, headers=extra)
    except BaseException:
        await upstream.close()
        raise

    async def down() -> None:  # holder -> caller
        try:
            while True:
                msg = await upstream.recv()
                if isinstance(msg, bytes):
                    await websocket.send_bytes(msg)
                else:
                    await websocket.send_text(msg)
        except ConnectionClosed:
            pass
        code, reason = upstream.close_code, upstream.close_reason or ""
        if code not in _SENDABLE and not (code is not None and 3000 <= code <= 4999):
            code, reason = CLOSE_HOLDER_GONE, "the instance holding the session went away"
        await close_quietly(websocket, code, reason)

    async def up() -> None:  # caller -> holder
        code = 1000
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                code = int(msg.get("code") or 1000)
                break
            data = msg.get("bytes")
            text = msg.get("text")
            try:
                if data is not None:
                    await upstream.send(data)
                elif text is not None:
                    await upstream.send(text)
            except ConnectionClosed:
                return  # `down` closes the caller with the holder's code
        if code not in _SENDABLE and not 3000 <= code <= 4999:
            code = 1000
        with contextlib.suppress(Exception):
            await upstream.close(code)

    down_task = asyncio.create_task(down())
    up_task = asyncio.create_task(up())
    try:
        done, _ = await asyncio.wait({down_task, up_task}, return_when=asyncio.FIRST_COMPLETED)
        if up_task in done and down_task not in done:
            # The caller went away: the holder's close completes `down` shortly.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(down_task), 5)
    finally:
        for t in (down_task, up_task):
            t.cancel()
        for t in (down_task, up_task):
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await upstream.close()
        await close_quietly(websocket)
