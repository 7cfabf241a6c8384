"""Store and runtime kept in step: the repair of differences (the store is the
source of truth), and what a start and a shutdown do to the clusters and the ledger.

Every instance starts its runtime; what changes the store on its own initiative
(repairs, expiries and accrual at a start, finishing removals, the final charges
of a shutdown whose replicas keep running) is the leader's (`ecolink.leadership`)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

from ecocore.status import ACCRUING, TERMINAL, ClusterStatus
from ecolink.clock import monotonic
from ecolink.leadership import Leadership
from ecolink.runtime.base import RuntimeUnavailable
from ecolink.service.core import Core
from ecolink.service.expiry import Expiry
from ecolink.service.lifecycle import MICROS_PER_SECOND, alive, follow
from ecolink.service.listener import RuntimeEvents
from ecolink.store import Cluster, Event, to_us
from ecolink.store.instances import ALIVE_US

log = logging.getLogger(__name__)

S = ClusterStatus
# The statuses a runtime is handed on start: everything not ended.
_KNOWN = (S.PENDING, S.RUNNING, S.STOPPING, S.STOPPED)


class Reconciler:
    def __init__(
        self,
        core: Core,
        expiry: Expiry,
        events: RuntimeEvents,
        *,
        grace_s: float,
        leadership: Leadership,
    ) -> None:
        self.core = core
        self.expiry = expiry
        self.events = events
        self.grace_s = grace_s
        self.leadership = leadership
        # Differences between store and runtime seen once: cluster id -> when.
        self._suspects: dict[str, float] = {}

    async def reconcile(self) -> int:
        """Repair what differs between the store (the source of truth) and the runtime:
        a cluster that should run but whose replicas are gone (an action whose commit
        failed and whose undo failed too), a stopped cluster with replicas still
        running, a cluster the runtime runs that the store ended or never recorded.
        A difference must be seen on two rounds `grace_s` apart (a runtime converges
        in its own time); each repair is logged and recorded as an event."""
        core = self.core
        if not core.runtime_started or not self.leadership.leading:
            self._suspects.clear()
            return 0
        mono = monotonic()
        seen: set[str] = set()
        repaired = 0

        def confirmed(cid: str) -> bool:
            seen.add(cid)
            first = self._suspects.setdefault(cid, mono)
            return mono - first >= self.grace_s

        clusters = await core.store.run_read(
            lambda: core.store.list_clusters(None, statuses=(S.PENDING, S.RUNNING, S.STOPPED))
        )
        for c in clusters:
            if not self.leadership.leading:
                return repaired
            replicas = core.runtime.replicas(c.id)
            if c.status in ACCRUING:
                wrong = not replicas and c.replicas > 0
                what = f"is {c.status} but the runtime runs none of its {c.replicas} replicas"
            else:
                live = alive(replicas)
                wrong = bool(live)
                what = f"is stopped but the runtime still runs {len(live)} replicas"
            if not wrong or not confirmed(c.id):
                continue
            async with core.lock(c.account_id):
                fresh = await core.store.run_read(functools.partial(core.store.cluster, c.id))
                if fresh is None or fresh.status != c.status:
                    continue
                log.warning("reconcile: cluster %s %s; putting the runtime back", c.id, what)
                try:
                    await core.runtime.apply(core.spec_for(fresh))
                except Exception as exc:
                    log.warning("reconcile: could not repair cluster %s: %s", c.id, exc)
                    continue
                now = core.now()
                message = (
                    f"the runtime differed from the record (the cluster {what}); it was put back"
                )

                def record(f: Cluster = fresh, m: str = message, t: int = now) -> Event:
                    return core.event(f, "reconciled", m, t)

                ev = await core.commit(record)
            self._suspects.pop(c.id, None)
            core.bus.publish(events=[ev])
            repaired += 1
        ids = getattr(core.runtime, "cluster_ids", None)
        if ids is not None:
            for cid in list(ids()):
                if self.events.launching(cid):
                    continue
                known = await core.store.run_read(functools.partial(core.store.cluster, cid))
                if known is not None and known.status not in TERMINAL:
                    continue
                if not confirmed(cid):
                    continue
                log.warning(
                    "reconcile: the runtime runs cluster %s, which is %s in the store; removing it",
                    cid,
                    "unknown" if known is None else known.status,
                )
                try:
                    await core.runtime.terminate(cid)
                except Exception as exc:
                    log.warning("reconcile: could not remove cluster %s: %s", cid, exc)
                    continue
                self._suspects.pop(cid, None)
                repaired += 1
        for cid in set(self._suspects) - seen:
            del self._suspects[cid]
        return repaired

    # -- start and shutdown ----------------------------------------------------------
    async def start(self, expire_due: Callable[[], Awaitable[int]]) -> None:
        """Reconcile after a start: expire what expired while down (charging only up to
        expires_at) and resume accrual of clusters a clean shutdown suspended (both
        as the leader: a follower leaves them to it), hand the runtime the clusters it
        should run."""
        core = self.core
        latest = await core.store.run_read(core.store.latest_time)
        if latest is not None:
            if latest > to_us(core.clock.now()):
                log.warning(
                    "the clock reads earlier than the last recorded time by %.1f s; "
                    "time is counted from the record, never backwards",
                    (latest - to_us(core.clock.now())) / MICROS_PER_SECOND,
                )
            core.not_before(latest)
        now = core.now()
        await core.commit(lambda: core.store.end_kept_sessions_at_start(now, None, now - ALIVE_US))
        if not self.leadership.leading:
            await self.start_runtime()
            return
        await expire_due()

        def resume_accrual() -> None:
            for c in core.store.list_clusters(None, statuses=ACCRUING):
                if c.suspended:
                    c.suspended = False
                    core.ledger.start_accruing(c, now)
                    c.last_charge_at = max(c.last_charge_at, now)
                    core.store.update_cluster(c)

        await core.commit(resume_accrual)
        await self.start_runtime()

    async def start_runtime(self) -> None:
        core = self.core
        known = [core.spec_for(c) for c in core.store.list_clusters(None, statuses=_KNOWN)]
        try:
            await core.runtime.start(self.events, known)
        except RuntimeUnavailable:
            log.warning("the runtime cannot be reached; retrying")
            return
        core.runtime_started = True
        if self.leadership.leading:
            for c in core.store.list_clusters(None, statuses=(S.TERMINATING,)):
                await self.expiry.finish_terminating(c)
        now = core.now()
        for c in core.store.list_clusters(None, statuses=(S.PENDING, S.RUNNING, S.STOPPING)):
            before = c.status
            follow(c, core.runtime.replicas(c.id), now)
            if c.status != before:

                def save(c: Cluster = c) -> None:
                    core.store.update_cluster(c)

                await core.commit(save)
            if c.status in ACCRUING:
                core.track(c.id)

    async def shutdown(self, *, stop_replicas: bool) -> None:
        """Post charges up to now. With `stop_replicas` (the local runtime) the replicas
        stop with the backend, so accrual pauses until the next start; a runtime whose
        replicas keep running (kubernetes) keeps accruing, and only the leader posts
        (the next leader goes on from what is stored)."""
        core = self.core
        now = core.now()
        if not stop_replicas and not self.leadership.leading:
            try:
                await core.runtime.shutdown(stop_replicas)
            except Exception:
                log.exception("runtime shutdown failed")
            return

        def final() -> None:
            for c in core.store.list_clusters(None, statuses=ACCRUING):
                if c.suspended:
                    continue
                if stop_replicas:
                    core.ledger.stop_accruing(c, now, now)
                    c.suspended = True
                else:
                    core.ledger.settle(c, now, now)
                core.store.update_cluster(c)

        try:
            await core.commit(final)
        except Exception:
            log.exception("posting the final charges failed")
        try:
            await core.runtime.shutdown(stop_replicas)
        except Exception:
            log.exception("runtime shutdown failed")
