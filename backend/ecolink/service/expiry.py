"""The end of a cluster's time: settle and release at `expires_at`, then remove it
from the runtime. Used by the reaper, by actions that find a cluster overdue, and by
a start that finds clusters left `terminating`."""

from __future__ import annotations

import logging
import time

from ecocore.status import TERMINAL, ClusterStatus
from ecolink.runtime.base import RuntimeUnavailable
from ecolink.service.core import Core
from ecolink.service.lifecycle import alive, move
from ecolink.store import Cluster, Event

log = logging.getLogger(__name__)
# How long past its termination grace a cluster's replicas may still be listed before
# it is recorded terminated anyway (a node that never confirms a pod's end).
DRAIN_SLACK_S = 60.0


class Expiry:
    def __init__(self, core: Core) -> None:
        self.core = core
        # Clusters the runtime was told to remove whose replicas still drained, and
        # until when (steady seconds) they may: not told again (a kubernetes terminate
        # waits), only looked at; recorded terminated after that time in any case.
        self._draining: dict[str, float] = {}

    async def expire_locked(self, c: Cluster, now: int) -> None:
        """Settle and release at `expires_at`, then remove the cluster from the runtime
        (the account's lock is held).

        The money side commits first: expiry is not a request that can be refused, and
        charges stop at expires_at whatever the runtime says. If the runtime cannot be
        reached the cluster stays `terminating` and the reaper tries again."""
        cid = c.id
        core = self.core

        def body() -> tuple[Cluster, Event] | None:
            c = core.store.cluster(cid)
            if c is None or c.status in TERMINAL or c.status == ClusterStatus.TERMINATING:
                return None
            core.ledger.stop_accruing(c, c.expires_at, now)
            core.ledger.release(c, "expiry: release the unused hold", now)
            move(c, ClusterStatus.TERMINATING)
            c.status_reason = "expired"
            c.suspended = False
            core.store.update_cluster(c)
            ev = core.event(c, "expired", "the cluster reached its expiry and was terminated", now)
            return c, ev

        done = await core.commit(body)
        if done is None:
            return
        c, ev = done
        core.bus.publish(cluster=c, account=c.account_id, events=[ev])
        if core.runtime_started:
            await self.finish_terminating(c)

    async def finish_terminating(self, c: Cluster) -> None:
        """Remove a `terminating` cluster from the runtime, then record it terminated
        once its replicas are gone (when the runtime cannot be reached, or the
        replicas still drain in their termination grace, it stays terminating: the
        reaper comes back, at once when the runtime reports them gone)."""
        core = self.core
        try:
            if c.id not in self._draining:
                await core.runtime.terminate(c.id)
        except RuntimeUnavailable:
            log.warning("cannot reach the runtime to remove %s; will retry", c.id)
            return
        except Exception:
            log.exception("removing %s failed; will retry", c.id)
            return
        if alive(core.runtime.replicas(c.id)):
            own = c.termination_grace_seconds
            grace = core.runtime.default_termination_grace_s if own is None else own
            until = self._draining.setdefault(c.id, time.monotonic() + grace + DRAIN_SLACK_S)
            if time.monotonic() < until:
                return
            log.warning(
                "the replicas of %s outlived their termination grace; recording it terminated", c.id
            )
        self._draining.pop(c.id, None)
        now = core.now()

        def body() -> Cluster | None:
            fresh = core.store.cluster(c.id)
            if fresh is None or fresh.status != ClusterStatus.TERMINATING:
                return None
            move(fresh, ClusterStatus.TERMINATED)
            fresh.terminated_at = now
            core.store.update_cluster(fresh)
            return fresh

        fresh = await core.commit(body)
        if fresh is None:
            return
        core.untrack(c.id)
        core.bus.publish(cluster=fresh)
