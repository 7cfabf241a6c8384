"""What every route handler needs, in one object stored on `app.state.ctx`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import HTTPConnection

from ecocore.clock import Clock
from ecolink.api.edge_rules import MAX_WEBSOCKETS_PER_ACCOUNT
from ecolink.catalog import Catalog
from ecolink.runtime.base import Runtime
from ecolink.service import ClusterService
from ecolink.store import Store


@dataclass
class AppContext:
    service: ClusterService
    store: Store
    runtime: Runtime
    clock: Clock
    state_dir: Path
    catalog: Catalog
    # ecolink.telemetry.TelemetryHub (None: summaries and replicas report no GPUs).
    telemetry: Any = None
    # ecolink.sessions.SessionManager, where the runtime supports kept sessions.
    sessions: Any = None
    # The base of public service URLs; None: the address the request came to.
    public_url: str | None = None
    tls: bool = False
    # Local replicas stop with the backend; kubernetes replicas keep running.
    stop_replicas_on_shutdown: bool = True
    # A separate service origin: cluster gc_X is served at gc-X.{service_domain}.
    service_domain: str | None = None
    # WebSockets one account may hold open at once.
    max_websockets_per_account: int = MAX_WEBSOCKETS_PER_ACCOUNT
    # The watch hub (ecolink.api.watch.WatchHub), made by create_app.
    hub: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def get_ctx(conn: HTTPConnection) -> AppContext:
    """The context of the app serving this request or WebSocket."""
    ctx: AppContext = conn.app.state.ctx
    return ctx
