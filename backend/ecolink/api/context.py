"""What every route handler needs, in one object stored on `app.state.ctx`.

`ecolink.wiring.build_context` makes it; `create_app` adds the watch hub."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from ecocore.clock import Clock
from ecocore.fleet_delta import RowVersions
from ecolink.api.edge_rules import MAX_PORTFORWARDS_PER_ACCOUNT, MAX_WEBSOCKETS_PER_ACCOUNT
from ecolink.api.proxy_pool import ProxyState
from ecolink.catalog import Catalog
from ecolink.presence import Presence
from ecolink.runtime.base import Runtime
from ecolink.service import ClusterService
from ecolink.sessions import SessionManager
from ecolink.store import Store
from ecolink.streams import ClusterStreams
from ecolink.telemetry import TelemetryHub

if TYPE_CHECKING:
    from ecolink.api.watch import WatchHub
    from ecolink.front.traffic import TrafficView

# The store part of a cluster's JSON, by (cluster id, base URL): (row signature, text).
RenderCache = dict[tuple[str, str | None], tuple[tuple[Any, ...], str]]
# The fleet GPU list's answers, by (account id, brief, only bad rows).
GpuListVersions = dict[tuple[str, bool, bool], RowVersions]


@dataclass
class AppContext:
    service: ClusterService
    store: Store
    runtime: Runtime
    clock: Clock
    state_dir: Path
    catalog: Catalog
    # None: summaries and replicas report no GPUs.
    telemetry: TelemetryHub | None = None
    # None where the runtime keeps no sessions (the routes answer 503).
    sessions: SessionManager | None = None
    # The base of public service URLs; None: the address the request came to.
    public_url: str | None = None
    tls: bool = False
    # Local replicas stop with the backend; kubernetes replicas keep running.
    stop_replicas_on_shutdown: bool = True
    # A separate service origin: cluster gc_X is served at gc-X.{service_domain}.
    service_domain: str | None = None
    # WebSockets one account may hold open at once.
    max_websockets_per_account: int = MAX_WEBSOCKETS_PER_ACCOUNT
    # Port-forward WebSockets one account may hold open at once (a cap of their own).
    max_portforwards_per_account: int = MAX_PORTFORWARDS_PER_ACCOUNT
    # The service URL's keep-alive connections to replicas.
    proxy: ProxyState = field(default_factory=ProxyState)
    render_cache: RenderCache = field(default_factory=dict)
    gpu_versions: GpuListVersions = field(default_factory=dict)
    # WebSockets open per account id (the auth middleware's and the front's cap).
    websockets_open: dict[str, int] = field(default_factory=dict)
    # Port-forward WebSockets open per account id (counted apart from the rest).
    portforwards_open: dict[str, int] = field(default_factory=dict)
    # The front's counters of service-URL traffic; None until the front starts.
    traffic: TrafficView | None = None
    # This instance's row among those serving from the database (None in tests that
    # build a context by hand).
    presence: Presence | None = None
    # The read and stream use cases, over the service, runtime, store and sessions.
    streams: ClusterStreams = field(init=False)
    # The watch hub, made by create_app.
    hub: WatchHub = field(init=False)

    def __post_init__(self) -> None:
        self.streams = ClusterStreams(self.service, self.runtime, self.store, self.sessions)


def get_ctx(conn: HTTPConnection) -> AppContext:
    """The context of the app serving this request or WebSocket."""
    ctx: AppContext = conn.app.state.ctx
    return ctx
