"""Replica logs: `GET /gpu-clusters/{id}/replicas/{replica}/logs?tail=&follow=&previous=`.

`text/plain`; with `follow=1` the answer streams new output until the replica goes
away or the client disconnects; `previous=1` is the run before the last restart;
`tail=N` the last N lines.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ecolink.api.common import account_of
from ecolink.api.context import get_ctx
from ecolink.api.errors import refusals
from ecolink.errors import InvalidField
from ecolink.runtime.base import ReplicaNotFound

router = APIRouter(tags=["replicas"])

TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


def _flag(request: Request, name: str) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return False
    v = value.strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise InvalidField(f"{name} must be 1, 0, true or false", name)


def _tail(request: Request) -> int | None:
    value = request.query_params.get("tail")
    if value is None or value == "":
        return None
    try:
        n = int(value)
    except ValueError:
        raise InvalidField("tail must be a whole number of lines", "tail") from None
    if not 0 <= n <= 1_000_000:
        raise InvalidField("tail must be 0..1000000", "tail")
    return n


@router.get(
    "/gpu-clusters/{id}/replicas/{replica}/logs",
    responses={**refusals(401, 404, 422, 503),
               200: {"content": {"text/plain": {}}, "description": "the replica's output"}},
    response_class=Response,
    summary="A replica's output (tail, follow, previous run)",
)
async def replica_logs(request: Request, id: str, replica: str) -> Response:
    acct = account_of(request)
    ctx = get_ctx(request)
    cluster = ctx.service.get_cluster(acct.id, id)
    tail = _tail(request)
    follow = _flag(request, "follow")
    previous = _flag(request, "previous")
    # An unknown replica is a 404 before anything is sent (a runtime whose logs()
    # only fails once iterated must not turn that into a broken 200).
    if replica not in {r.name for r in ctx.runtime.replicas(cluster.id)}:
        raise ReplicaNotFound(replica)
    source = ctx.runtime.logs(cluster.id, replica, tail=tail, follow=follow, previous=previous)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in source:
                yield chunk
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()

    headers = {"cache-control": "no-store", "x-content-type-options": "nosniff"}
    if follow:
        headers["x-accel-buffering"] = "no"
    return StreamingResponse(body(), media_type="text/plain; charset=utf-8", headers=headers)
