"""One-shot exec over WebSocket with the Kubernetes channel framing (v5, v4).

`GET /gpu-clusters/{id}/replicas/{replica}/exec?command=..&stdin=&stdout=&stderr=&tty=`
Binary frames `[channel][payload]`: 0 stdin, 1 stdout, 2 stderr, 3 status (a
Kubernetes `Status`, then the server closes), 4 resize `{"Width","Height"}`, 255 close
(v5: `[255][0]` closes stdin). Output is read from the runtime only as fast as the
client takes it (back-pressure). Bad credentials get 401, an unknown cluster or
replica 404, before the upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from ecolink.api.channels import V5, choose_subprotocol, pump_input, status_frame
from ecolink.api.context import AppContext
from ecolink.api.ws import before_upgrade, close_quietly
from ecolink.errors import InvalidField
from ecolink.runtime.base import ExecRequest, ExecResult, ExecStream
from ecolink.store import Account

log = logging.getLogger(__name__)

router = APIRouter(tags=["exec"])

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


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
    return ExecRequest(
        command=command,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        tty=tty,
        width=width,
        height=height,
    )


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


@dataclass(frozen=True, slots=True)
class _Opened:
    request: ExecRequest
    subprotocol: str | None
    stream: ExecStream | None
    # The program does not exist or cannot run.
    failure: FileNotFoundError | PermissionError | None = None


# --------------------------------------------------------------------------- route


@router.websocket("/gpu-clusters/{id}/replicas/{replica}/exec")
async def exec_ws(websocket: WebSocket, id: str, replica: str) -> None:
    async def prepare(ctx: AppContext, account: Account) -> _Opened:
        cluster = await ctx.streams.cluster(account.id, id)
        req = exec_request(websocket)
        proto = choose_subprotocol(websocket)
        try:
            stream = await ctx.streams.open_exec(cluster, replica, req)
        except (FileNotFoundError, PermissionError) as exc:
            return _Opened(req, proto, None, exc)
        return _Opened(req, proto, stream)

    opened = await before_upgrade(websocket, prepare)
    if opened is None:
        return
    await websocket.accept(subprotocol=opened.subprotocol)
    if opened.stream is None:
        await _failed_to_start(websocket, opened)
        return
    await bridge(
        websocket,
        opened.stream,
        v5=opened.subprotocol == V5,
        stdin=opened.request.stdin or opened.request.tty,
    )


async def _failed_to_start(ws: WebSocket, opened: _Opened) -> None:
    """Like a shell: exit code 127 (not found) or 126 (cannot run), with a message on
    stderr (stdout under a tty)."""
    missing = isinstance(opened.failure, FileNotFoundError)
    name = (opened.failure.filename if opened.failure is not None else None) or "command"
    what = "not found" if missing else "permission denied"
    msg = f"exec: {name}: {what}\n".encode()
    await ws.send_bytes(bytes([1 if opened.request.tty else 2]) + msg)
    await ws.send_bytes(status_frame(ExecResult(exit_code=127 if missing else 126)))
    await close_quietly(ws)


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
        pump_input(
            ws,
            v5=v5,
            write=stream.write if stdin else None,
            resize=stream.resize,
            close_stdin=stream.close_stdin,
        )
    )
    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if out_task in done:
            in_task.cancel()
            exc = out_task.exception()
            if exc is not None and not isinstance(
                exc, WebSocketDisconnect | RuntimeError | OSError
            ):
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
