"""The runtime's listener: replica states, runtime events and failures, as the
runtime reports them.

The runtime calls these on the event loop: they read, and hand any write to a task
(the writer thread), so that a locked database never stalls the runtime. Events
of a cluster whose launch has not committed yet wait in a buffer that the launch
writes with its own transaction.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine, Sequence

from ecocore.status import ACCRUING, ClusterStatus
from ecolink.errors import StoreUnavailableError
from ecolink.runtime.base import ReplicaState
from ecolink.service.core import Core
from ecolink.service.lifecycle import alive, derive_status, follow, move
from ecolink.store import Cluster, Event, StoreError

log = logging.getLogger(__name__)

EarlyEvent = tuple[int, str, str, str | None]  # (at, kind, message, replica)


class RuntimeEvents:
    def __init__(self, core: Core) -> None:
        self.core = core
        # Runtime events for clusters whose launch has not committed yet.
        # (Read and written from the event loop and the store's writer thread.)
        self._early: dict[str, list[EarlyEvent]] = {}
        self._early_lock = threading.Lock()
        self._background: set[asyncio.Task[None]] = set()
        # The newest replica report not yet followed, per cluster: one task per
        # cluster follows them in order, the newest only (reads off the loop).
        self._pending: dict[str, Sequence[ReplicaState]] = {}

    # -- launches that have not committed yet ------------------------------------
    def hold_back(self, cluster_id: str) -> None:
        """Keep `cluster_id`'s runtime events until its launch commits."""
        with self._early_lock:
            self._early[cluster_id] = []

    def held_back(self, cluster_id: str) -> list[EarlyEvent]:
        with self._early_lock:
            return list(self._early.get(cluster_id, []))

    def release(self, cluster_id: str) -> None:
        """From here on runtime events of `cluster_id` find it in the store."""
        with self._early_lock:
            self._early.pop(cluster_id, None)

    def launching(self, cluster_id: str) -> bool:
        with self._early_lock:
            return cluster_id in self._early

    def _keep_early(self, cluster_id: str, event: EarlyEvent) -> bool:
        with self._early_lock:
            early = self._early.get(cluster_id)
            if early is None:
                return False
            early.append(event)
            return True

    # -- background writes ---------------------------------------------------------
    def spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def cancel(self) -> None:
        for t in list(self._background):
            t.cancel()

    def follow_runtime(self, c: Cluster) -> None:
        """Derive the status again from the replicas as they are now: reports that came
        while the action's transaction was being written found the old record (or no
        cluster yet, during a launch)."""
        status, started_at = derive_status(c, self.core.runtime.replicas(c.id), self.core.now())
        if status != c.status:
            self.spawn(self._save_status(c.id, ClusterStatus(c.status), status, started_at))

    # -- RuntimeListener -------------------------------------------------------------
    def replicas_changed(self, cluster_id: str, replicas: Sequence[ReplicaState]) -> None:
        following = cluster_id in self._pending
        self._pending[cluster_id] = replicas
        if not following:
            self.spawn(self._follow(cluster_id))

    async def _follow(self, cluster_id: str) -> None:
        """Follow `cluster_id`'s replica reports until none is left: the cluster is
        read in a reader thread, so a report arriving meanwhile waits its turn, and
        only the newest of those is followed."""
        store = self.core.store
        try:
            while True:
                replicas = self._pending[cluster_id]
                try:
                    c = await store.run_read(lambda: store.cluster(cluster_id))
                except StoreError as exc:
                    log.warning("could not follow cluster %s's replicas: %s", cluster_id, exc)
                    c = None
                if c is not None:
                    self._followed(c, replicas)
                if self._pending.get(cluster_id) is replicas:
                    return
        finally:
            if self._pending.get(cluster_id) is not None:
                del self._pending[cluster_id]

    def _followed(self, c: Cluster, replicas: Sequence[ReplicaState]) -> None:
        before = ClusterStatus(c.status)
        if before is ClusterStatus.TERMINATING and not alive(replicas):
            self.core.wake.set()  # the reaper records it terminated now
        follow(c, replicas, self.core.now())
        if c.status != before:
            self.spawn(self._save_status(c.id, before, ClusterStatus(c.status), c.started_at))
        self.core.bus.publish(cluster=c)

    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None:
        now = self.core.now()
        if self._keep_early(cluster_id, (now, kind, message, replica)):
            return
        self.spawn(self._save_event(cluster_id, now, kind, message, replica))

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        self.spawn(self.fail(cluster_id, message))

    # -- the writes behind them ------------------------------------------------------
    async def _save_status(
        self, cluster_id: str, before: ClusterStatus, status: ClusterStatus, started_at: int | None
    ) -> None:
        def body() -> Cluster | None:
            fresh = self.core.store.cluster(cluster_id)
            if fresh is None or fresh.status != before:
                return None
            move(fresh, status)
            fresh.started_at = started_at
            self.core.store.update_cluster(fresh)
            return fresh

        try:
            fresh = await self.core.commit(body)
        except StoreUnavailableError:
            log.warning(
                "could not record that cluster %s is %s; the next change will", cluster_id, status
            )
            return
        if fresh is not None:
            self.core.bus.publish(cluster=fresh)

    async def _save_event(
        self, cluster_id: str, now: int, kind: str, message: str, replica: str | None
    ) -> None:
        def body() -> Event | None:
            if self._keep_early(cluster_id, (now, kind, message, replica)):
                return None  # a launch that has not committed yet
            c = self.core.store.cluster(cluster_id)
            if c is None:
                return None
            return self.core.event(c, kind, message, now, replica)

        try:
            ev = await self.core.commit(body)
        except StoreUnavailableError:
            log.warning(
                "could not record the event %s of cluster %s: %s", kind, cluster_id, message
            )
            return
        if ev is not None:
            self.core.bus.publish(events=[ev])

    async def fail(self, cluster_id: str, message: str) -> None:
        """The runtime gave up on the cluster: stop charging, release the hold."""
        store = self.core.store
        c = await store.run_read(lambda: store.cluster(cluster_id))
        if c is None:
            return
        ledger = self.core.ledger
        async with self.core.lock(c.account_id):
            now = self.core.now()

            def body() -> tuple[Cluster, Event] | None:
                c = self.core.store.cluster(cluster_id)
                if c is None or c.status not in ACCRUING:
                    return None
                ledger.stop_accruing(c, now, now)
                ledger.release(c, "failed: release the unused hold", now)
                move(c, ClusterStatus.FAILED)
                c.status_reason = "error"
                self.core.store.update_cluster(c)
                ev = self.core.event(c, "replica_failed", f"the cluster failed: {message}", now)
                return c, ev

            done = await self.core.commit(body)
        if done is None:
            return
        c, ev = done
        self.core.untrack(c.id)
        self.core.bus.publish(cluster=c, account=c.account_id, events=[ev])
