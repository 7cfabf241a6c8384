"""The ASGI app: `create_app(ctx)` wires routes, auth, error answers, the watch hub
and the lifespan (service start and clean shutdown)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from ecocore.wire import EndpointIn, ErrorBody, ExtendIn, LaunchIn, ScaleIn
from ecolink import __version__
from ecolink.api import (
    errors,
    exec_ws,
    logs,
    portforward,
    proxy,
    routes,
    routes_clusters,
    routes_gpus,
    sessions,
    watch,
)
from ecolink.api.auth import OPEN_PATHS, AuthMiddleware
from ecolink.api.context import AppContext
from ecolink.front import metrics as front_metrics
from ecolink.observe import ready
from ecolink.observe.metrics import Metrics, ObserveMiddleware, instrument_store

log = logging.getLogger(__name__)

REQUEST_MODELS: tuple[type[BaseModel], ...] = (LaunchIn, ScaleIn, ExtendIn, EndpointIn)


def create_app(ctx: AppContext) -> FastAPI:
    ctx.hub = watch.WatchHub(ctx)
    app = FastAPI(
        title="ecolink",
        version=__version__,
        description="GPU clusters: launch, scale, extend, stop, resume, terminate; "
        "billing by holds; live watch feed.",
        lifespan=_lifespan(ctx),
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.ctx = ctx
    ctx.service.observers.append(ctx.hub)

    # The service URL first: its requests are the hot path, and its paths
    # collide with no other route, so matching them first costs the rest nothing.
    app.include_router(proxy.router)
    app.include_router(routes.router)
    app.include_router(routes_clusters.router)
    app.include_router(routes_gpus.router)
    app.include_router(watch.router)
    app.include_router(exec_ws.router)
    app.include_router(sessions.router)
    app.include_router(logs.router)
    app.include_router(portforward.router)
    app.include_router(front_metrics.router)
    app.include_router(ready.router)

    metrics = Metrics()
    metrics.watch(ctx)
    instrument_store(ctx.store, metrics.store)
    app.state.metrics = metrics
    app.add_middleware(AuthMiddleware)
    # Added last, so outermost: refusals of the auth middleware are counted too.
    app.add_middleware(ObserveMiddleware, metrics=metrics, routes=lambda: app.routes)
    errors.install(app)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    return app


def _lifespan(ctx: AppContext) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Start the service, telemetry and the watch hub; on the way out end the kept
    sessions and stop everything (replicas too, where they stop with the backend)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ctx.service.start()
        if ctx.telemetry is not None:
            await ctx.telemetry.start()
        await ctx.hub.start()
        if ctx.presence is not None:
            ctx.presence.start(ctx.presence.address)
        try:
            yield
        finally:
            if ctx.presence is not None:
                await ctx.presence.stop()
            await ctx.hub.stop()
            if ctx.sessions is not None:
                try:
                    await ctx.sessions.end_all("backend_restart")
                except Exception:
                    log.exception("ending kept sessions failed")
            if ctx.telemetry is not None:
                await ctx.telemetry.stop()
            await ctx.service.shutdown(stop_replicas=ctx.stop_replicas_on_shutdown)

    return lifespan


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, made once: the request models and the error form as
    components, the security schemes, and no stock 422 answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _add_components(schema)
        for path, ops in schema.get("paths", {}).items():
            for method, op in ops.items():
                if isinstance(op, dict):
                    _shape_operation(path, method, op)
        schemas = schema["components"]["schemas"]
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        app.openapi_schema = schema
        return schema

    return openapi


def _add_components(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    models: tuple[type[BaseModel], ...] = (*REQUEST_MODELS, ErrorBody)
    for model in models:
        js = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in js.pop("$defs", {}).items():
            schemas.setdefault(name, sub)
        schemas[model.__name__] = js
    components["securitySchemes"] = {
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "description": "an API key: Authorization: Bearer eco_...",
        },
        "consoleSession": {
            "type": "apiKey",
            "in": "cookie",
            "name": "eco_session",
            "description": "opens the service URLs /gpu-clusters/{id}/service/... only",
        },
    }
    schema["security"] = [{"apiKey": []}, {"consoleSession": []}]


def _shape_operation(path: str, method: str, op: dict[str, Any]) -> None:
    if path in OPEN_PATHS and method in ("get", "head"):
        op["security"] = []
    # FastAPI documents a stock 422 for string path parameters, which cannot fail:
    # every refusal a route makes is declared with it.
    responses = op.get("responses", {})
    for status in list(responses):
        content = responses[status].get("content", {}).get("application/json", {})
        if content.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
            del responses[status]
