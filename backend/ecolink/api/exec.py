"""One-shot exec over WebSocket with the Kubernetes channel framing (v5, v4).

`GET /gpu-clusters/{id}/replicas/{replica}/exec?command=..&stdin=&stdout=&stderr=&tty=`
Binary frames `[channel][payload]`: 0 stdin, 1 stdout, 2 stderr, 3 status (a
Kubernetes `Status`, then the server closes), 4 resize `{"Width","Height"}`, 255 close
(v5: `[255][0]` closes stdin). Output is read from the runtime only as fast as the
client takes it (back-pressure). Bad credentials get 401, an unknown cluster or
replica 404, before the upgrade. Also holds the framing helpers the kept-session
routes share.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ecolink.api.auth import require_ws_account
from ecolink.api.context import get_ctx
from ecolink.api.errors import runtime_failure_answer
from ecolink.errors import ApiError, InvalidField, Unauthenticated
from ecolink.runtime.base import (
    CLOSE,
    RESIZE,
    STATUS,
    STDIN,
    ExecRequest,
    ExecResult,
    ExecStream,
    ReplicaNotFound,
    RuntimeRefused,
    RuntimeUnavailable,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["exec"])

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
SUBPROTOCOLS = (V5, V4)
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


# --------------------------------------------------------------------------- helpers


def choose_subprotocol(ws: WebSocket) -> str | None:
    """v5 when offered, else v4; None when the client offered no subprotocol (then
    v4 framing is used and no subprotocol is echoed)."""
    offered = [p.strip() for p in ws.scope.get("subprotocols") or []]
    for p in SUBPROTOCOLS:
        if p in offered:
            return p
    if offered:
        raise InvalidField(
            f"unsupported subprotocol; use {V5} or {V4}", "Sec-WebSocket-Protocol"
        )
    return None


async def deny(ws: WebSocket, status: int, body: dict[str, Any]) -> None:
    """Answer an HTTP error instead of upgrading (api.md's error form)."""
    raw = json.dumps(body).encode()
    if "websocket.http.response" in (ws.scope.get("extensions") or {}):
        await ws.send({
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"),
                        (b"content-length", str(len(raw)).encode())],
        })
        await ws.send({"type": "websocket.http.response.body", "body": raw})
    else:
        await ws.close(code=1008 if status in (401, 404) else 1011)


async def deny_error(ws: WebSocket, exc: Exception) -> None:
    if isinstance(exc, ApiError):
        await deny(ws, exc.status, exc.body())
    elif isinstance(exc, ReplicaNotFound | RuntimeRefused | RuntimeUnavailable):
        await deny(ws, *runtime_failure_answer(exc))
    else:
        log.error("exec refused", exc_info=exc)
        await deny(ws, 503, {"error": {"code": "runtime_unavailable",
                                       "message": "the exec could not be started"}})


def flag(ws: WebSocket, name: str, default: bool) -> bool:
    value = ws.query_params.get(name)
    if value is None:
        return default
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise InvalidField(f"{name} must be 1, 0, true or false", name)


def status_frame(result: ExecResult) -> bytes:
    return bytes([STATUS]) + json.dumps(result.status_json()).encode()


def parse_resize(payload: bytes) -> tuple[int, int] | None:
    try:
        d = json.loads(payload)
        w, h = int(d.get("Width", 0)), int(d.get("Height", 0))
    except (ValueError, TypeError, AttributeError):
        return None
    if 0 < w <= 10000 and 0 < h <= 10000:
        return w, h
    return None


async def pump_input(
    ws: WebSocket,
    *,
    v5: bool,
    write: Callable[[bytes], Awaitable[None]] | None,
    resize: Callable[[int, int], Awaitable[None]],
    close_stdin: Callable[[], Awaitable[None]],
) -> None:
    """Client frames to the process until the client goes away."""
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        data = msg.get("bytes")
        if data is None:
            text = msg.get("text")
            if text is None:
                continue
            data = text.encode()
        if not data:
            continue
        channel, payload = data[0], data[1:]
        if channel == STDIN:
            if write is not None and payload:
                await write(payload)
        elif channel == RESIZE:
            size = parse_resize(payload)
            if size is not None:
                await resize(*size)
        elif channel == CLOSE and v5:
            if payload[:1] == bytes([STDIN]):
                await close_stdin()


async def close_quietly(ws: WebSocket, code: int = 1000, reason: str = "") -> None:
    if ws.application_state != WebSocketState.DISCONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code=code, reason=reason)


def exec_request(ws: WebSocket) -> ExecRequest:
    command = tuple(ws.query_params.getlist("command"))
    tty = flag(ws, "tty", False)
    stdin = flag(ws, "stdin", False)
    stdout = flag(ws, "stdout", True)
    stderr = flag(ws, "stderr", True) and not tty
    if sum(len(c) for c in command) > 64 * 1024:
        raise InvalidField("the command is too long", "command")
    width = _int_param(ws, "width", 80)
    height = _int_param(ws, "height", 24)
    return ExecRequest(command=command, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty,
                       width=width, height=height)


def _int_param(ws: WebSocket, name: str, default: int) -> int:
    value = ws.query_params.get(name)
    if value is None:
        return default
    try:
        n = int(value)
    except ValueError:
        raise InvalidField(f"{name} must be an integer", name) from None
    if not 1 <= n <= 10000:
        raise InvalidField(f"{name} must be 1..10000", name)
    return n


# --------------------------------------------------------------------------- route


@router.websocket("/gpu-clusters/{id}/replicas/{replica}/exec")
async def exec_ws(websocket: WebSocket, id: str, replica: str) -> None:
    try:
        acct = await require_ws_account(websocket)
    except Unauthenticated:
        return
    ctx = get_ctx(websocket)
    try:
        cluster = ctx.service.get_cluster(acct.id, id)
        req = exec_request(websocket)
        proto = choose_subprotocol(websocket)
        stream = await ctx.runtime.exec(cluster.id, replica, req)
    except (FileNotFoundError, PermissionError) as exc:
        # The program does not exist or cannot run: like a shell, exit code 127 or
        # 126 with a message on stderr.
        missing = isinstance(exc, FileNotFoundError)
        proto = choose_subprotocol(websocket)
        await websocket.accept(subprotocol=proto)
        what = "not found" if missing else "permission denied"
        msg = f"exec: {exc.filename or 'command'}: {what}\n".encode()
        await websocket.send_bytes(bytes([1 if req.tty else 2]) + msg)
        await websocket.send_bytes(status_frame(ExecResult(exit_code=127 if missing else 126)))
        await close_quietly(websocket)
        return
    except Exception as exc:
        await deny_error(websocket, exc)
        return
    await websocket.accept(subprotocol=proto)
    await bridge(websocket, stream, v5=proto == V5, stdin=req.stdin or req.tty)


async def bridge(ws: WebSocket, stream: ExecStream, *, v5: bool, stdin: bool) -> None:
    """Relay one exec: output frames as the client takes them, input as it comes,
    then the status frame and close. A client that goes away ends the process."""

    async def output() -> None:
        while True:
            frame = await stream.read()
            if frame is None:
                break
            channel, data = frame
            await ws.send_bytes(bytes([channel]) + data)
        result = await stream.result()
        await ws.send_bytes(status_frame(result))

    out_task = asyncio.create_task(output())
    in_task = asyncio.create_task(
        pump_input(ws, v5=v5, write=stream.write if stdin else None, resize=stream.resize,
                   close_stdin=stream.close_stdin)
    )
    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if out_task in done:
            in_task.cancel()
            exc = out_task.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError | OSError):
                log.warning("exec output failed: %s", exc)
            await close_quietly(ws)
        else:
            # The client went away (or its input failed): end the process.
            out_task.cancel()
    finally:
        for t in (out_task, in_task):
            t.cancel()
        for t in (out_task, in_task):
            with contextlib.suppress(BaseException):
                await t
        with contextlib.suppress(Exception):
            await stream.kill()
