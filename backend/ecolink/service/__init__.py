"""Use cases on GPU clusters: launch, scale, extend, stop, resume, restart, terminate,
endpoints, plus the reaper (charges, expiry, warnings) and the runtime listener.

How an action runs (per account, one at a time, under that account's lock):
1. read the cluster and check the request against state, GPU budget and balance;
2. apply the change to the runtime (a `RuntimeUnavailable` answers 503: nothing in
   the store has changed);
3. one SQLite transaction writes the ledger entries, the state change, the event and
   the idempotency record together, in the store's writer thread (the event loop
   never waits on the database: a locked one delays the action, never the API).
If 3 fails (the database stays locked past its busy timeout, the disk fails) the
runtime is put back as it was before 2 and the answer is a 503 that says so; if
even that fails, the reaper finds the difference and repairs it. A crash between 2
and 3 leaves the store as it was; on start the runtime is reconciled to the store
(the store is the source of truth), so nothing is ever half-applied. Charges never
change what an account has available, so the reaper's charges and the runtime
listener's status updates cannot invalidate a check made in 1.

The parts: `action` (the skeleton) and `actions` (the use cases), `ledger`,
`expiry`, `reaper`, `reconcile` (start and shutdown), `listener` (the runtime's
listener), `changes` (the observers). `ClusterService` composes them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ecocore.clock import Clock
from ecocore.status import ACCRUING
from ecolink.catalog import Catalog
from ecolink.errors import NotFound
from ecolink.idempotency import IdempotencyRecorder
from ecolink.leadership import Leadership, SoleLeader
from ecolink.runtime.base import ClusterSpec, ReplicaState, Runtime
from ecolink.service.actions import Actions
from ecolink.service.changes import Observer
from ecolink.service.core import Core, LaunchRequest, Tracker
from ecolink.service.expiry import Expiry
from ecolink.service.ledger import hourly
from ecolink.service.lifecycle import MICROS_PER_SECOND
from ecolink.service.listener import RuntimeEvents
from ecolink.service.reaper import Reaper
from ecolink.service.reconcile import Reconciler
from ecolink.service.remote import RemoteChanges
from ecolink.store import Account, Cluster, Event, LedgerEntry, Store

__all__ = [
    "LISTED_AFTER_TERMINATION_US",
    "ClusterService",
    "LaunchRequest",
    "Observer",
    "Tracker",
]

LISTED_AFTER_TERMINATION_US = 7 * 24 * 3600 * MICROS_PER_SECOND

Recorder = IdempotencyRecorder | None


class ClusterService:
    """The use cases, the reaper and the runtime's listener, behind one face."""

    def filesystems(self) -> list[dict[str, str]]:
        """The shared filesystems a launch may mount (the runtime knows them)."""
        return self.runtime.filesystems()

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        catalog: Catalog,
        clock: Clock,
        *,
        tracker: Tracker | None = None,
        charge_interval_s: float = 60.0,
        tick_s: float = 5.0,
        reconcile_grace_s: float = 15.0,
        leadership: Leadership | None = None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.catalog = catalog
        self.clock = clock
        # Who does the periodic work; one instance alone always does.
        self.leadership = leadership = leadership or SoleLeader()
        self._core = core = Core(store, runtime, catalog, clock, tracker)
        self.observers: list[Observer] = core.bus.observers
        self._events = RuntimeEvents(core)
        self._remote = RemoteChanges(store, core.bus, core.track, core.untrack)
        expiry = Expiry(core)
        self._actions = Actions(core, expiry, self._events, runtime.filesystems)
        self._reconciler = Reconciler(
            core, expiry, self._events, grace_s=reconcile_grace_s, leadership=leadership
        )
        self._reaper = Reaper(
            core,
            expiry,
            self._reconciler,
            charge_interval_s=charge_interval_s,
            tick_s=tick_s,
            leadership=leadership,
        )
        self.started = False

    @property
    def reconcile_grace_s(self) -> float:
        return self._reconciler.grace_s

    @reconcile_grace_s.setter
    def reconcile_grace_s(self, value: float) -> None:
        self._reconciler.grace_s = value

    def now(self) -> int:
        """The clock's time in microseconds, never earlier than a time already used."""
        return self._core.now()

    # -- queries -----------------------------------------------------------------------
    def get_cluster(self, account_id: str, ref: str) -> Cluster:
        return self._core.get_cluster(account_id, ref)

    def list_clusters(
        self, account_id: str, statuses: Sequence[str] | None = None
    ) -> list[Cluster]:
        return self.store.list_clusters(
            account_id, statuses=statuses, terminated_since=self.now() - LISTED_AFTER_TERMINATION_US
        )

    def account(self, account_id: str) -> Account:
        acct = self.store.account(account_id)
        if acct is None:
            raise NotFound("no such account")
        return acct

    def ledger(
        self,
        account_id: str,
        *,
        cluster_id: str | None = None,
        limit: int = 100,
        before: int | None = None,
    ) -> list[LedgerEntry]:
        return self.store.ledger(account_id, cluster_id=cluster_id, limit=limit, before=before)

    def events(self, cluster_id: str, limit: int = 1000) -> list[Event]:
        return self.store.events(cluster_id, limit)

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        return self.runtime.replicas(cluster_id)

    def hourly_rate(self, c: Cluster) -> int:
        return hourly(c)

    def burn_rate(self, c: Cluster) -> int:
        return hourly(c) if c.status in ACCRUING and not c.suspended else 0

    def spec(self, c: Cluster, *, run: bool) -> ClusterSpec:
        """The spec of `c` with its replicas running (`run`) or scaled to zero."""
        return self._core.spec(c, run)

    # -- use cases ---------------------------------------------------------------------
    def validate_launch(self, req: LaunchRequest) -> None:
        """The catalog-dependent field checks (422), in api.md's field order."""
        self._actions.validate_launch(req)

    async def launch(self, account_id: str, req: LaunchRequest, idem: Recorder = None) -> Cluster:
        return await self._actions.launch(account_id, req, idem)

    async def scale(
        self, account_id: str, ref: str, replicas: int, idem: Recorder = None
    ) -> Cluster:
        return await self._actions.scale(account_id, ref, replicas, idem)

    async def extend(
        self, account_id: str, ref: str, micro_hours: int, idem: Recorder = None
    ) -> Cluster:
        return await self._actions.extend(account_id, ref, micro_hours, idem)

    async def stop(self, account_id: str, ref: str, idem: Recorder = None) -> Cluster:
        return await self._actions.stop(account_id, ref, idem)

    async def resume(self, account_id: str, ref: str, idem: Recorder = None) -> Cluster:
        return await self._actions.resume(account_id, ref, idem)

    async def terminate(self, account_id: str, ref: str, idem: Recorder = None) -> Cluster:
        return await self._actions.terminate(account_id, ref, idem)

    async def restart(self, account_id: str, ref: str, idem: Recorder = None) -> Cluster:
        return await self._actions.restart(account_id, ref, idem)

    async def restart_replica(
        self, account_id: str, ref: str, replica: str, idem: Recorder = None
    ) -> ReplicaState:
        return await self._actions.restart_replica(account_id, ref, replica, idem)

    async def set_endpoint(
        self, account_id: str, ref: str, port: int, idem: Recorder = None
    ) -> Cluster:
        return await self._actions.set_port(account_id, ref, port, idem)

    async def close_endpoint(self, account_id: str, ref: str, idem: Recorder = None) -> Cluster:
        return await self._actions.set_port(account_id, ref, None, idem)

    # -- the reaper --------------------------------------------------------------------
    async def expire_due(self) -> int:
        return await self._reaper.expire_due()

    async def post_charges(self, *, force: bool = False) -> int:
        return await self._reaper.post_charges(force=force)

    async def reconcile(self) -> int:
        return await self._reconciler.reconcile()

    async def tick(self) -> None:
        await self._reaper.tick()

    # -- start and shutdown ----------------------------------------------------------------
    async def start(self, *, background: bool = True) -> None:
        """Join the leader election, reconcile after a start (as the leader: expire
        what expired while down, resume accrual; every instance: hand the runtime its
        clusters), then start the reaper (its rounds run while this instance leads)."""
        await self.leadership.start()
        await self._reconciler.start(self._reaper.expire_due)
        self._remote.attach()
        if background:
            self._reaper.start()
        self.started = True

    async def shutdown(self, *, stop_replicas: bool) -> None:
        """Stop the reaper, post charges up to now (see `Reconciler.shutdown`), then
        hand the leadership over."""
        await self._reaper.stop()
        self._events.cancel()
        await self._reconciler.shutdown(stop_replicas=stop_replicas)
        await self.leadership.stop()

    # -- the runtime's listener ------------------------------------------------------------
    def replicas_changed(self, cluster_id: str, replicas: Sequence[ReplicaState]) -> None:
        self._events.replicas_changed(cluster_id, replicas)

    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None:
        self._events.runtime_event(cluster_id, kind, message, replica)

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        self._events.cluster_failed(cluster_id, message)

    async def fail(self, cluster_id: str, message: str) -> None:
        """What `cluster_failed` starts, awaited: stop charging, release the hold."""
        await self._events.fail(cluster_id, message)
