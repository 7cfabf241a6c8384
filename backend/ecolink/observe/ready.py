"""`GET /readyz`: 200 while this instance can serve, 503 while the database or the
runtime cannot be reached (`/healthz` stays the liveness probe: a process that
answers it is alive, even while what it depends on is away)."""

from __future__ import annotations

import asyncio
import os

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from ecolink.api.context import AppContext, get_ctx

router = APIRouter()

DATABASE_TIMEOUT_S = 2.0


def _database_answers(ctx: AppContext) -> str | None:
    """None when the database answers a query; else why not."""
    store = ctx.store
    path = getattr(store, "path", None)
    # SQLite: an open connection goes on writing to a file that was removed or
    # replaced, and whatever it writes is lost with the process.
    if (
        getattr(store, "dialect", "sqlite") == "sqlite"
        and isinstance(path, str)
        and path != ":memory:"
        and not os.path.exists(path)
    ):
        return f"the database file {os.path.basename(path)} is gone"
    try:
        store.execute("SELECT 1").fetchall()
    except Exception as exc:
        return f"the database does not answer: {exc}"
    return None


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    ctx = get_ctx(request)
    try:
        why = await asyncio.wait_for(asyncio.to_thread(_database_answers, ctx), DATABASE_TIMEOUT_S)
    except TimeoutError:
        why = f"the database did not answer within {DATABASE_TIMEOUT_S:g} s"
    if why is not None:
        return JSONResponse(
            {"error": {"code": "store_unavailable", "message": why}}, status_code=503
        )
    if not ctx.runtime.available():
        return JSONResponse(
            {"error": {"code": "runtime_unavailable", "message": "the runtime cannot be reached"}},
            status_code=503,
        )
    return JSONResponse({"status": "ready"})
