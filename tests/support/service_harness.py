"""An in-memory runtime and a service factory for unit tests of the service layer.

`MemoryRuntime` keeps replica states in a dict and reports them at once; setting
`unavailable = True` makes every call raise RuntimeUnavailable (the Kubernetes API
down), so tests can check that a refused action changed nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

from ecocore.clock import FakeClock
from ecolink.catalog import Catalog, parse_catalog
from ecolink.runtime.base import (
    ClusterSpec,
    ExecRequest,
    ExecStream,
    HostPort,
    ReplicaNotFound,
    ReplicaState,
    ReplicaTelemetry,
    Runtime,
    RuntimeInfo,
    RuntimeListener,
    RuntimeRefused,
    RuntimeUnavailable,
)
from ecolink.service import ClusterService
from ecolink.store import Store

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class MemoryRuntime(Runtime):
    def __init__(self) -> None:
        self.info = RuntimeInfo(name="local", telemetry="simulated")
        self.specs: dict[str, ClusterSpec] = {}
        self.states: dict[str, list[ReplicaState]] = {}
        self.listener: RuntimeListener | None = None
        self.unavailable = False
        # A refusal every change gets while set (as an API server that says no).
        self.refusal: RuntimeRefused | None = None
        self.calls: list[tuple[str, str]] = []
        self.started_with: list[ClusterSpec] = []

    def _check(self) -> None:
        if self.unavailable:
            raise RuntimeUnavailable("the test made the runtime unreachable")
        if self.refusal is not None:
            raise self.refusal

    async def start(self, listener: RuntimeListener, known: Sequence[ClusterSpec]) -> None:
        self._check()
        self.listener = listener
        self.started_with = list(known)
        for cid in list(self.specs):
            if cid not in {s.cluster_id for s in known}:
                await self.terminate(cid)
        for spec in known:
            await self.apply(spec)

    async def shutdown(self, stop_replicas: bool) -> None:
        if stop_replicas:
            self.states.clear()

    async def apply(self, spec: ClusterSpec) -> None:
        self._check()
        self.calls.append(("apply", spec.cluster_id))
        self.specs[spec.cluster_id] = spec
        self.states[spec.cluster_id] = [
            ReplicaState(
                name=f"{spec.name}-{i}", index=i, phase="Running", ready=True, node="memory"
            )
            for i in range(spec.replicas)
        ]
        if self.listener is not None:
            self.listener.replicas_changed(spec.cluster_id, self.states[spec.cluster_id])

    async def terminate(self, cluster_id: str) -> None:
        self._check()
        self.calls.append(("terminate", cluster_id))
        self.specs.pop(cluster_id, None)
        self.states.pop(cluster_id, None)
        if self.listener is not None:
            self.listener.replicas_changed(cluster_id, [])

    async def restart(self, cluster_id: str, replica: str | None = None) -> None:
        self._check()
        states = self.states.get(cluster_id, [])
        if replica is not None and not any(s.name == replica for s in states):
            raise ReplicaNotFound(replica)
        self.calls.append(("restart", cluster_id))

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        return list(self.states.get(cluster_id, []))

    async def exec(self, cluster_id: str, replica: str, request: ExecRequest) -> ExecStream:
        raise NotImplementedError

    def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        raise NotImplementedError

    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        raise NotImplementedError

    async def telemetry(self, cluster_id: str) -> list[ReplicaTelemetry]:
        return []

    def filesystems(self) -> list[dict[str, str]]:
        return []

    def available(self) -> bool:
        return not self.unavailable


def catalog_for_tests(budget: int = 64) -> Catalog:
    return parse_catalog(
        {
            "regions": [
                {
                    "name": "us-east",
                    "gpu_budget": budget,
                    "gpu_types": [
                        {
                            "name": "H100-80GB",
                            "rate_per_gpu_hour": "2.50",
                            "gpu_counts": [1, 2, 4, 8],
                        },
                        {"name": "L40S", "rate_per_gpu_hour": "0.95", "gpu_counts": [1, 2, 4, 8]},
                    ],
                },
                {
                    "name": "eu-west",
                    "gpu_budget": 8,
                    "gpu_types": [
                        {
                            "name": "A100-80GB",
                            "rate_per_gpu_hour": "1.753333",
                            "gpu_counts": [1, 2],
                        },
                    ],
                },
            ]
        }
    )


def memory_database() -> str:
    return ":memory:"


# Where `make_service` keeps its state when given no store: a new database each call.
# The `engine` fixture (tests/conftest.py) points it at a new Postgres database
# instead, so the same tests run on both engines.
new_database: Callable[[], str] = memory_database
# The stores `make_service` opened, closed by `close_made` (each holds connections).
made: list[Store] = []


def close_made() -> None:
    while made:
        made.pop().close()


def make_service(
    store: Store | None = None,
    *,
    budget: int = 64,
    clock: FakeClock | None = None,
    runtime: MemoryRuntime | None = None,
) -> tuple[ClusterService, MemoryRuntime, FakeClock, Store]:
    if store is None:
        store = Store(new_database())
        made.append(store)
    clock = clock or FakeClock(T0)
    runtime = runtime or MemoryRuntime()
    service = ClusterService(store, runtime, catalog_for_tests(budget), clock)
    return service, runtime, clock, store


def new_account(service: ClusterService, name: str, credit_usd: int) -> str:
    from ecolink.store import to_us

    now = to_us(service.clock.now())
    with service.store.tx():
        acct = service.store.create_account(name, now)
        if credit_usd:
            service.store.post(acct.id, None, "credit", credit_usd * 1_000_000, "credit", now)
    return acct.id
