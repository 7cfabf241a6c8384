"""What every connection of one front process shares: its settings (`FrontConfig`),
the replica pools fed by the control plane, the upstream connection pools, the
routes cache, the connection counts and the rate-limited error log (`Front`)."""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import monotonic as _monotonic
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from ecolink.api import edge_rules
from ecolink.front.balancer import Pool
from ecolink.front.upstream import ConnPool

if TYPE_CHECKING:
    from ecolink.front.table import ClusterInfo, Table

log = logging.getLogger("ecolink.front")


class Client(Protocol):
    """What `Front` needs of a client connection: its deadline, and the calls that
    time it out and close it."""

    deadline: float

    def _timeout(self) -> None: ...
    def _close(self) -> None: ...


@dataclass
class FrontConfig:
    """The front's settings (`ecolink serve` flags): time limits, caps, upstream pools,
    the balancing policy and the origins."""

    head_timeout: float = 10.0
    idle_timeout: float = 20.0
    max_head_bytes: int = 64 * 1024
    max_connections: int = 4096
    max_per_address: int = 1024
    connect_timeout: float = 5.0
    upstream_idle_timeout: float = 30.0
    upstream_max_per_replica: int = 256
    scheme: str = "http"
    policy: str = "least-outstanding"
    # The API's public URL (a cookie-opened WebSocket may come from it) and the
    # separate service origin's host suffix (`gc-ID.SUFFIX` is a cluster's root).
    public_url: str = ""
    service_domain: str | None = None
    max_websockets_per_account: int = edge_rules.MAX_WEBSOCKETS_PER_ACCOUNT
    # How the kernel schedules each front process's event loop (`server.apply_scheduling`).
    scheduling: str = "batch"


class ErrorLog:
    """Logs an error once, then how many times it repeated (every `every_s`)."""

    def __init__(self, logger: logging.Logger, every_s: float = 10.0) -> None:
        self.logger = logger
        self.every_s = every_s
        self.counts: dict[str, int] = {}
        self.last: dict[str, float] = {}

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        n = self.counts.get(what)
        if n is None:
            self.counts[what] = 0
            self.last[what] = now
            self.logger.warning("%s", what)
            return
        self.counts[what] = n + 1
        if now - self.last[what] >= self.every_s:
            self.logger.warning(
                "%s (repeated %d times in %.0f s)", what, n + 1, now - self.last[what]
            )
            self.counts[what] = 0
            self.last[what] = now


class Front:
    """What every connection of one front process shares."""

    def __init__(
        self,
        table: Table,
        api_socket: str,
        cfg: FrontConfig,
        request_targets: Callable[[str], Any] | None = None,
        websockets_open: dict[str, int] | None = None,
        reserve_websocket: Callable[[str], Awaitable[bool]] | None = None,
        release_websocket: Callable[[str], None] | None = None,
    ) -> None:
        self.table = table
        self.api_socket = api_socket
        self.cfg = cfg
        self.pools: dict[str, Pool] = {}
        self.versions: dict[str, int] = {}
        self.policies: dict[str, str] = {}
        self.conns = ConnPool(
            max_per_key=cfg.upstream_max_per_replica,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.upstream_idle_timeout,
        )
        self.api_conns = ConnPool(
            max_per_key=1 << 16,
            connect_timeout=cfg.connect_timeout,
            idle_timeout=cfg.upstream_idle_timeout,
        )
        self.clients: set[Client] = set()
        self.per_address: collections.Counter[str] = collections.Counter()
        self.errors = ErrorLog(log)
        self.request_targets = request_targets
        # Service WebSockets open per account (in `ecolink serve`'s own process the
        # same count as the API's, so both kinds share one cap there).
        self.websockets_open: dict[str, int] = (
            websockets_open if websockets_open is not None else {}
        )
        # In a worker front: the control plane keeps the server-wide count, so a
        # WebSocket is reserved there before it is opened and released there after.
        self.reserve_websocket = reserve_websocket
        self.release_websocket = release_websocket
        self.refused = 0
        self.housekeeping_task: asyncio.Task[None] | None = None  # set by serve_front
        # Requests waiting for a running cluster's first ready targets from the feed.
        self._target_waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._routes: dict[tuple[str, str], tuple[ClusterInfo, str, tuple[str, ...]]] = {}
        self._route_snap: object = None

    # -- fed by the control plane
    def set_targets(
        self,
        cluster_id: str,
        targets: list[tuple[str, str, int, str]] | None,
        error: str | None = None,
        policy: str | None = None,
    ) -> None:
        if targets is None:
            self.pools.pop(cluster_id, None)
            return
        pool = self.pools.get(cluster_id)
        if pool is None:
            pool = self.pools[cluster_id] = Pool(cluster_id, policy or self.cfg.policy)
        elif policy:
            pool.policy = policy
        pool.update(targets)
        pool.error = error
        if pool.replicas:
            for fut in self._target_waiters.pop(cluster_id, ()):
                if not fut.done():
                    fut.set_result(None)

    async def wait_for_targets(self, cluster_id: str, timeout: float) -> None:
        """Until the feed brings ready targets for the cluster, or `timeout`."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._target_waiters.setdefault(cluster_id, [])
        waiters.append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            if fut in waiters:
                waiters.remove(fut)
            if not waiters:
                self._target_waiters.pop(cluster_id, None)

    def route(self, account: str, ref: str) -> tuple[ClusterInfo, str, tuple[str, ...]] | None:
        """The account's cluster called `ref` (id or name), its service prefix as the
        client wrote it, and every prefix a replica's cookie may be scoped to."""
        snap = self.table.snap
        if snap is not self._route_snap:
            self._routes.clear()
            self._route_snap = snap
        hit = self._routes.get((account, ref))
        if hit is not None:
            return hit
        info = self.table.cluster(account, ref)
        if info is None:
            return None
        prefix = "/gpu-clusters/" + quote(ref, safe="") + "/service"
        prefixes = tuple(
            {
                prefix,
                f"/gpu-clusters/{info.id}/service",
                "/gpu-clusters/" + quote(info.name, safe="") + "/service",
            }
        )
        hit = (info, prefix, prefixes)
        if len(self._routes) < 10_000 and self.table.snap is snap:
            self._routes[(account, ref)] = hit
        return hit

    def counters(self) -> dict[str, dict[str, Any]]:
        return {
            cid: {r.name: r.counters() for r in pool.replicas} for cid, pool in self.pools.items()
        }

    def housekeeping(self) -> None:
        self.conns.sweep()
        self.api_conns.sweep()

    def sweep(self) -> None:
        """Time out the connections whose head or idle deadline has passed (one check
        for all, a few times a second, costs less than a timer per request)."""
        now = _monotonic()
        for client in [c for c in self.clients if c.deadline and c.deadline <= now]:
            client._timeout()
