"""Replica logs: `GET /gpu-clusters/{id}/replicas/{replica}/logs?tail=&follow=&previous=`.

`text/plain`; with `follow=1` the answer streams new output until the replica goes
away or the client disconnects; `previous=1` is the run before the last restart;
`tail=N` the last N lines. The query parameters are checked exactly as the
OpenAPI document describes them (flags `0`, `1`, `true`, `false`; `tail` a whole
number 0..1000000), so whatever the document calls invalid is refused with 422.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ecolink.api.deps import Ctx, OwnedCluster
from ecolink.api.errors import refusals
from ecolink.errors import InvalidField

router = APIRouter(tags=["replicas"])

TRUE = ("1", "true")
FALSE = ("0", "false")
MAX_TAIL = 1_000_000
_DIGITS = re.compile(r"[0-9]{1,7}")

_FLAG_SCHEMA: dict[str, Any] = {"type": "string", "enum": [*TRUE, *FALSE], "default": "0"}
LOGS_PARAMS: list[dict[str, Any]] = [
    {
        "name": "tail",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_TAIL},
        "description": "only the last N lines (default: everything kept)",
    },
    {
        "name": "follow",
        "in": "query",
        "required": False,
        "schema": _FLAG_SCHEMA,
        "description": "`1`/`true`: keep streaming new output until the replica goes away",
    },
    {
        "name": "previous",
        "in": "query",
        "required": False,
        "schema": _FLAG_SCHEMA,
        "description": "`1`/`true`: the run before the last restart",
    },
]


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise InvalidField(f"{name} must be 1, 0, true or false", name)


def _tail(request: Request) -> int | None:
    value = request.query_params.get("tail")
    if value is None:
        return None
    # ASCII digits only: int() would also take signs, spaces, underscores and other
    # scripts' digits, which the document does not allow.
    if not _DIGITS.fullmatch(value) or int(value) > MAX_TAIL:
        raise InvalidField(f"tail must be a whole number of lines, 0..{MAX_TAIL}", "tail")
    return int(value)


@router.get(
    "/gpu-clusters/{id}/replicas/{replica}/logs",
    responses={
        **refusals(401, 404, 422, 503),
        200: {
            "content": {"text/plain": {"schema": {"type": "string"}}},
            "description": "the replica's output",
        },
    },
    response_class=Response,
    openapi_extra={"parameters": LOGS_PARAMS},
    summary="A replica's output (tail, follow, previous run)",
)
async def replica_logs(request: Request, ctx: Ctx, cluster: OwnedCluster, replica: str) -> Response:
    tail = _tail(request)
    follow = _flag(request, "follow")
    previous = _flag(request, "previous")
    body = ctx.streams.replica_logs(cluster, replica, tail=tail, follow=follow, previous=previous)
    headers = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
    if follow:
        headers["x-accel-buffering"] = "no"
    return StreamingResponse(body, media_type="text/plain; charset=utf-8", headers=headers)
