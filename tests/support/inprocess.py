"""The API app in this process, built by the same composition root as `ecolink serve`
(`ecolink.wiring.build_context`), reached over `httpx.ASGITransport`: no sockets, no
lifespan (the service's background work does not start), no WebSockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI

from ecocore.clock import SystemClock
from ecolink.api.app import create_app
from ecolink.api.context import AppContext
from ecolink.store import to_us
from ecolink.wiring import ServeConfig, build_context


@dataclass
class InProcessApi:
    ctx: AppContext
    app: FastAPI
    client: httpx.AsyncClient

    def new_key(self, name: str = "alice") -> str:
        """An account of that name with an API key; the key."""
        store = self.ctx.store
        now = to_us(SystemClock().now())
        with store.tx():
            acct = store.create_account(name, now)
            return store.create_api_key(acct.id, now)


@contextlib.asynccontextmanager
async def inprocess_api(state_dir: Path, **config: object) -> AsyncIterator[InProcessApi]:
    ctx = build_context(ServeConfig(state_dir=state_dir, **config))  # type: ignore[arg-type]
    try:
        app = create_app(ctx)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield InProcessApi(ctx, app, client)
    finally:
        ctx.store.close()
