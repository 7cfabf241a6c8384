"""The Kubernetes channel framing (v5, v4) that exec and the kept shell sessions
speak: choosing the subprotocol, the status frame, and the client's input frames
(stdin, resize, v5's close)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.websockets import WebSocket

from ecolink.api.ws import receive_data
from ecolink.errors import InvalidField
from ecolink.runtime.base import CLOSE, RESIZE, STATUS, STDIN, ExecResult

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
SUBPROTOCOLS = (V5, V4)


def choose_subprotocol(ws: WebSocket) -> str | None:
    """v5 when offered, else v4; None when the client offered no subprotocol (then
    v4 framing is used and no subprotocol is echoed)."""
    offered = [p.strip() for p in ws.scope.get("subprotocols") or []]
    for p in SUBPROTOCOLS:
        if p in offered:
            return p
    if offered:
        raise InvalidField(f"unsupported subprotocol; use {V5} or {V4}", "Sec-WebSocket-Protocol")
    return None


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
    while (data := await receive_data(ws)) is not None:
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
