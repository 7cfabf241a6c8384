"""The reaper: expiry, expiry warnings, periodic charges, retries of removals,
repairs and pruning, in rounds that wake for the next deadline.

Rounds run only while this instance leads (`ecolink.leadership`): a follower starts
none, a leader that gains the leadership runs one at once (whatever came due
meanwhile is done), and one that loses it finishes the transaction in progress and
stops there. Nothing here relies on that for money: each expiry, charge and warning
re-reads its cluster inside its own transaction and writes only what is still due
there (a charge posts what accrued up to now less what the cluster was already
charged, `billing.charge_due`, and moves `last_charge_at` forward only), so two
instances that both lead for a moment, or one whose round overlaps another's, post
nothing twice. On SQLite the write transaction holds the database's one write lock
from its first read (BEGIN IMMEDIATE); a store with concurrent writers must lock the
account's row before the transaction reads the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import defaultdict

from ecocore.status import ACCRUING, EXPIRABLE, ClusterStatus
from ecolink.leadership import Leadership
from ecolink.service.core import Core
from ecolink.service.expiry import Expiry
from ecolink.service.lifecycle import MICROS_PER_SECOND, WARNINGS
from ecolink.service.reconcile import Reconciler
from ecolink.store import Cluster, Event

log = logging.getLogger(__name__)

CHARGE_BATCH = 50


class Reaper:
    def __init__(
        self,
        core: Core,
        expiry: Expiry,
        repair: Reconciler,
        *,
        charge_interval_s: float,
        tick_s: float,
        leadership: Leadership,
    ) -> None:
        self.core = core
        self.expiry = expiry
        self.repair = repair
        self.charge_interval_us = int(charge_interval_s * MICROS_PER_SECOND)
        self.tick_s = tick_s
        self.leadership = leadership
        self._task: asyncio.Task[None] | None = None
        # Set when leadership is gained: the next round starts at once.
        self._round_due = False
        leadership.subscribe(self._leadership_changed)

    def _leadership_changed(self, leading: bool) -> None:
        if leading:
            self._round_due = True
            self.core.wake.set()

    def _leading(self) -> bool:
        """Whether to go on with the next transaction of a round."""
        return self.leadership.leading

    async def expire_due(self) -> int:
        """Expire every cluster whose time is up; returns how many."""
        core = self.core
        if not self._leading():
            return 0
        now = core.now()
        n = 0
        deadlines = await core.store.run_read(lambda: core.store.deadlines(EXPIRABLE))
        for cid, account_id, expires_at, _ in deadlines:
            if not self._leading():
                break
            if expires_at <= now:
                async with core.lock(account_id):
                    fresh = await core.store.run_read(functools.partial(core.store.cluster, cid))
                    if fresh is not None and fresh.status in EXPIRABLE and fresh.expires_at <= now:
                        await self.expiry.expire_locked(fresh, now)
                        n += 1
        return n

    async def post_charges(self, *, force: bool = False) -> int:
        """Post what accrued for every accruing cluster not charged in the last
        interval (all of them with `force`). Returns how many charges were posted."""
        core = self.core
        if not self._leading():
            return 0
        now = core.now()
        due_before = now if force else now - int(self.charge_interval_us * 5 / 6)
        by_account: dict[str, list[Cluster]] = defaultdict(list)
        accruing = await core.store.run_read(
            lambda: core.store.list_clusters(None, statuses=ACCRUING)
        )
        for c in accruing:
            if not c.suspended and c.last_charge_at <= due_before and c.expires_at > now:
                by_account[c.account_id].append(c)
        posted = 0
        for account_id, clusters in by_account.items():
            changed = False
            # In batches, one transaction each: a thousand clusters' charges must not
            # hold the writer for long.
            for i in range(0, len(clusters), CHARGE_BATCH):
                if not self._leading():
                    break
                batch = clusters[i : i + CHARGE_BATCH]

                def body(batch: list[Cluster] = batch) -> int:
                    n = 0
                    for stale in batch:
                        # Read again inside the transaction: what another round
                        # charged since the list was read is not charged again.
                        fresh = core.store.cluster(stale.id)
                        if (
                            fresh is None
                            or fresh.status not in ACCRUING
                            or fresh.suspended
                            or fresh.expires_at <= now
                        ):
                            continue
                        before = fresh.spent_total
                        core.ledger.settle(fresh, now, now)
                        core.store.update_cluster(fresh)
                        if fresh.spent_total != before:
                            n += 1
                    return n

                async with core.lock(account_id):
                    n = await core.commit(body)
                posted += n
                changed = changed or n > 0
            # Periodic charges move the balance, not the cluster's state: watchers get
            # the account frame; clusters' `spent` shows with their next change (a
            # frame per cluster per minute would swamp a feed of a thousand clusters).
            if changed:
                core.bus.publish(account=account_id)
        return posted

    async def warn_expiring(self) -> list[Event]:
        core = self.core
        out: list[Event] = []
        if not self._leading():
            return out
        now = core.now()
        deadlines = await core.store.run_read(lambda: core.store.deadlines(EXPIRABLE))
        for cid, _, expires_at, warned in deadlines:
            if not self._leading():
                break
            left = expires_at - now
            if left <= 0:
                continue
            new_bits = 0
            for bit, before in WARNINGS:
                if left <= before and not warned & bit:
                    new_bits |= bit
            if not new_bits:
                continue
            minutes = max(1, -(-left // (60 * MICROS_PER_SECOND)))

            def body(
                cid: str = cid, new_bits: int = new_bits, left: int = left, minutes: int = minutes
            ) -> Event | None:
                fresh = core.store.cluster(cid)
                # Warned meanwhile (by another round): once is enough.
                if fresh is None or fresh.warned & new_bits == new_bits:
                    return None
                fresh.warned |= new_bits
                # Both moments may pass at once: one warning is enough.
                fresh.warned |= sum(bit for bit, before in WARNINGS if left <= before)
                core.store.update_cluster(fresh)
                return core.event(
                    fresh,
                    "expiry_warning",
                    f"expires in {minutes} minute{'s' if minutes != 1 else ''}; "
                    "extend it to keep it running",
                    now,
                )

            ev = await core.commit(body)
            if ev is not None:
                out.append(ev)
                core.bus.publish(events=[ev])
        return out

    async def next_deadline(self) -> int | None:
        """The next expiry or warning moment (microseconds), for the reaper's sleep."""
        now = self.core.now()
        best: int | None = None
        store = self.core.store
        for _, _, expires_at, warned in await store.run_read(lambda: store.deadlines(EXPIRABLE)):
            moments = [expires_at] + [
                expires_at - before for bit, before in WARNINGS if not warned & bit
            ]
            for m in moments:
                if m > now and (best is None or m < best):
                    best = m
        return best

    async def tick(self) -> None:
        """One reaper round: expiry, warnings, charges, retries, repairs, pruning.
        Each step starts only while this instance leads."""
        core = self.core
        await self.expire_due()
        await self.warn_expiring()
        await self.post_charges()
        if core.runtime_started and self._leading():
            terminating = await core.store.run_read(
                lambda: core.store.list_clusters(None, statuses=(ClusterStatus.TERMINATING,))
            )
            for c in terminating:
                if not self._leading():
                    break
                async with core.lock(c.account_id):
                    await self.expiry.finish_terminating(c)
        await self.repair.reconcile()
        if not self._leading():
            return
        now = core.now()

        def prune() -> None:
            core.store.prune_idempotency(now)
            core.store.prune_console_sessions(now)

        await core.commit(prune)

    async def run(self) -> None:
        core = self.core
        while True:
            self._round_due = False
            try:
                if not core.runtime_started:
                    await self.repair.start_runtime()
                if await self.leadership.confirm():
                    await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaper round failed")
            delay = self.tick_s
            if self.leadership.leading:
                try:
                    nxt = await self.next_deadline()
                except Exception:
                    log.exception("reading the next deadline failed")
                    nxt = None
                if nxt is not None:
                    delay = min(delay, max(0.05, (nxt - core.now()) / MICROS_PER_SECOND + 0.01))
            core.wake.clear()
            if self._round_due:
                continue  # gained the leadership during this round: another at once
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(core.wake.wait(), delay)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="ecolink-reaper")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
