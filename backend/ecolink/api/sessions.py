"""Kept shell sessions: create, list, attach (WebSocket, channel framing), end.

- `POST /gpu-clusters/{id}/replicas/{replica}/sessions` `{"command"?, "tty"?}` → 201
- `GET /gpu-clusters/{id}/sessions` → `{"sessions": [..]}` (ended ones included)
- `GET /gpu-clusters/{id}/sessions/{sid}/attach` (WebSocket): the kept output first,
  then live; several clients at once; a client that disconnects leaves the session
  running; a client too far behind is closed with code 4008. The upgrade answer's
  `x-eco-replay-bytes` header says how many bytes of output are the replayed history,
  so a terminal does not answer the queries in it again
- `DELETE /gpu-clusters/{id}/sessions/{sid}` → the ended session

A session another instance on the same database holds is listed here too; its
attach and end are relayed to that instance (`session_relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection

from ecocore.wire import SessionOut, SessionsOut
from ecolink.api.channels import V5, choose_subprotocol, pump_input, status_frame
from ecolink.api.common import json_response, parse_json, read_body
from ecolink.api.context import AppContext
from ecolink.api.deps import Ctx, OwnedCluster
from ecolink.api.errors import refusals
from ecolink.api.session_relay import end_on_holder, forwarded, open_on_holder, relay
from ecolink.api.ws import before_upgrade, close_quietly
from ecolink.errors import InvalidField, MalformedRequest
from ecolink.sessions import CLOSE_TOO_SLOW, ClientTooSlow, Session
from ecolink.store import Account
from ecolink.streams import HeldElsewhere

router = APIRouter(tags=["sessions"])

MAX_COMMAND = 4096
MAX_SIZE = 10000


# The body of POST .../sessions as the OpenAPI document shows it. The handler checks
# the body by hand (`_parse_create`) with the same rules, so that api.md's order of
# checks holds; a command's total length is at most MAX_COMMAND too.
class SessionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", title="SessionIn")
    command: (
        Annotated[str, Field(max_length=MAX_COMMAND)]
        | list[Annotated[str, Field(max_length=MAX_COMMAND)]]
        | None
    ) = Field(default=None, description="a string runs as `sh -c`; none: a login shell")
    tty: bool = True
    width: int = Field(default=80, ge=1, le=MAX_SIZE)
    height: int = Field(default=24, ge=1, le=MAX_SIZE)


# Inline (the app's component list is not this module's): a plain, $ref-free schema.
_CREATE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": SessionIn.model_json_schema()}},
    }
}


def _parse_create(data: Any) -> tuple[list[str] | str | None, bool, int, int]:
    if not isinstance(data, dict):
        raise MalformedRequest("the body must be a JSON object")
    unknown = set(data) - {"command", "tty", "width", "height"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidField(f"unknown field {name}", name)
    command = data.get("command")
    if command is not None:
        if isinstance(command, str):
            size = len(command)
        elif isinstance(command, list) and all(isinstance(x, str) for x in command):
            size = sum(len(x) for x in command)
        else:
            raise InvalidField("command must be a string or a list of strings", "command")
        if size > MAX_COMMAND:
            raise InvalidField(f"command must be at most {MAX_COMMAND} characters", "command")
    tty = data.get("tty", True)
    if not isinstance(tty, bool):
        raise InvalidField("tty must be true or false", "tty")
    size_ = []
    for name, default in (("width", 80), ("height", 24)):
        v = data.get(name, default)
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_SIZE:
            raise InvalidField(f"{name} must be an integer 1..{MAX_SIZE}", name)
        size_.append(v)
    return command, tty, size_[0], size_[1]


@router.post(
    "/gpu-clusters/{id}/replicas/{replica}/sessions",
    status_code=201,
    response_model=SessionOut,
    responses=refusals(400, 401, 404, 409, 413, 422, 503),
    openapi_extra=_CREATE_BODY,
    summary="Start a kept shell session in a replica",
    description="409 `conflict` once the cluster has 32 kept sessions still running; "
    "end one first. Of the ended sessions, the newest 32 are listed.",
)
async def create_session(
    request: Request, ctx: Ctx, cluster: OwnedCluster, replica: str
) -> Response:
    raw = await read_body(request)
    data = parse_json(raw) if raw.strip() else {}
    command, tty, width, height = _parse_create(data)
    s = await ctx.streams.create_session(
        cluster, replica, command, tty=tty, width=width, height=height
    )
    return json_response(s.as_json(), status=201)


@router.get(
    "/gpu-clusters/{id}/sessions",
    response_model=SessionsOut,
    responses=refusals(401, 404),
    summary="The cluster's kept sessions, ended ones included",
)
async def list_sessions(ctx: Ctx, cluster: OwnedCluster) -> Response:
    return json_response({"sessions": await ctx.streams.list_sessions(cluster)})


@router.delete(
    "/gpu-clusters/{id}/sessions/{sid}",
    response_model=SessionOut,
    responses=refusals(401, 404, 503),
    summary="End a kept session",
)
async def end_session(request: Request, ctx: Ctx, cluster: OwnedCluster, sid: str) -> Response:
    ended = await ctx.streams.end_session(cluster, sid, forwarded=forwarded(request))
    if isinstance(ended, HeldElsewhere):  # another instance holds it: ended there
        return await end_on_holder(request, ended, _instance_id(ctx))
    return json_response(ended)


def _instance_id(ctx: AppContext) -> str:
    return ctx.presence.id if ctx.presence is not None else ctx.store.instance_id


@router.websocket("/gpu-clusters/{id}/sessions/{sid}/attach")
async def attach_session(websocket: WebSocket, id: str, sid: str) -> None:
    async def prepare(
        ctx: AppContext, account: Account
    ) -> tuple[Session | ClientConnection, str | None]:
        cluster = await ctx.streams.cluster(account.id, id)
        proto = choose_subprotocol(websocket)
        found = await ctx.streams.live_session(cluster, sid, forwarded=forwarded(websocket))
        if isinstance(found, HeldElsewhere):  # another instance holds it: relayed
            return await open_on_holder(websocket, found, proto, _instance_id(ctx)), proto
        return found, proto

    found = await before_upgrade(websocket, prepare)
    if found is None:
        return
    s, proto = found
    if not isinstance(s, Session):
        await relay(websocket, s)
        return
    client = s.attach()
    # How many bytes of the first frames are replayed history (a terminal must not
    # answer the queries in them again: the program that asked is long past them).
    replay = str(max(0, s.end - client.cursor)).encode()
    try:
        await websocket.accept(subprotocol=proto, headers=[(b"x-eco-replay-bytes", replay)])
    except BaseException:
        s.detach(client)
        raise

    async def output() -> None:
        try:
            async for channel, data in s.frames(client):
                await websocket.send_bytes(bytes([channel]) + data)
        except ClientTooSlow:
            await close_quietly(websocket, CLOSE_TOO_SLOW, "client too slow: output skipped")
            return
        if s.result is not None:
            await websocket.send_bytes(status_frame(s.result))
        await close_quietly(websocket)

    out_task = asyncio.create_task(output())
    in_task = asyncio.create_task(
        pump_input(
            websocket, v5=proto == V5, write=s.write, resize=s.resize, close_stdin=s.close_stdin
        )
    )
    try:
        await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        s.detach(client)
        for t in (out_task, in_task):
            t.cancel()
        for t in (out_task, in_task):
            with contextlib.suppress(BaseException):
                await t
        await close_quietly(websocket)
