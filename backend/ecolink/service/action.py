"""The skeleton every use case on a cluster runs inside:

    async with self._action(account_id, idem, ref) as act:  # lock, now, replay check,
        c = act.cluster                                    # the cluster (expired if overdue)
        act.refuse_if(c.status in ..., "cannot ...")       # state check (409)
        await act.apply(new_spec, restore=old_spec)        # the runtime (503 if unreachable)
        c = await act.commit(body, money=True)             # one transaction + the answer kept
    # leaving: the cluster, the account and the events are published

`commit` runs `body` in the store's writer thread; the result it returns is the
answer kept for the `Idempotency-Key`, in the same transaction. If the transaction
does not commit, the runtime is put back as it was before `apply`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from ecocore.status import EXPIRABLE
from ecolink.errors import Conflict
from ecolink.idempotency import IdempotencyRecorder, Replayed, StoredAnswer
from ecolink.runtime.base import ClusterSpec
from ecolink.service.core import Core, Undo
from ecolink.service.expiry import Expiry
from ecolink.service.listener import RuntimeEvents
from ecolink.store import Cluster, Event, IdempotencyRecord

T = TypeVar("T")


class Action:
    def __init__(
        self,
        core: Core,
        expiry: Expiry,
        listener: RuntimeEvents,
        account_id: str,
        idem: IdempotencyRecorder | None,
    ) -> None:
        self.core = core
        self.expiry = expiry
        self.listener = listener
        self.account_id = account_id
        self.idem = idem
        self.now = 0
        self.cluster_id = ""
        self._cluster: Cluster | None = None
        self._lock = core.lock(account_id)
        self._held = False
        self._undo: Undo | None = None
        # What to publish once the action is done.
        self.changed: Cluster | None = None
        self.events: list[Event] = []
        self._money = False
        self._follow = False
        self._track: bool | None = None

    # -- the skeleton ----------------------------------------------------------------
    async def enter(self) -> None:
        await self._lock.acquire()
        self._held = True
        self.now = self.core.now()
        await self._check_replay()

    def leave(self) -> None:
        if self._held:
            self._lock.release()
            self._held = False

    def publish(self) -> None:
        c = self.changed
        if c is None:
            return
        if self._track is True:
            self.core.track(c.id)
        elif self._track is False:
            self.core.untrack(c.id)
        if self._follow:
            self.listener.follow_runtime(c)
        self.core.bus.publish(
            cluster=c, account=self.account_id if self._money else None, events=self.events
        )

    @contextlib.asynccontextmanager
    async def unlocked(self) -> AsyncIterator[None]:
        """Let go of the account's lock for slow runtime work that changes no money;
        the clock is read again once it is held again."""
        self.leave()
        try:
            yield
        finally:
            await self._lock.acquire()
            self._held = True
            self.now = self.core.now()

    # -- the steps ----------------------------------------------------------------------
    async def read(self, fn: Callable[[], T]) -> T:
        """`fn`'s reads (and checks) in a reader thread: the event loop never waits on
        the database (a locked SQLite file, a Postgres server far away or gone)."""
        return await self.core.store.run_read(fn)

    async def current(self, ref: str) -> Cluster:
        """The cluster, expired first if its time is up (the reaper may lag)."""
        account_id = self.account_id
        c = await self.read(lambda: self.core.get_cluster(account_id, ref))
        if c.status in EXPIRABLE and c.expires_at <= self.now:
            await self.expiry.expire_locked(c, self.now)
            cid = c.id
            c = await self.read(lambda: self.core.get_cluster(account_id, cid))
        self.cluster_id = c.id
        self._cluster = c
        return c

    @property
    def cluster(self) -> Cluster:
        """The cluster as the action found it (before its transaction)."""
        assert self._cluster is not None, "the action names no cluster"
        return self._cluster

    def fresh(self) -> Cluster:
        """The cluster as the store has it now (inside the transaction)."""
        return self.core.get_cluster(self.account_id, self.cluster_id)

    @staticmethod
    def refuse_if(wrong: bool, message: str) -> None:
        if wrong:
            raise Conflict(message)

    async def apply(self, spec: ClusterSpec, *, restore: ClusterSpec | None) -> None:
        """Apply `spec`; if the commit fails the runtime goes back to `restore` (None:
        the cluster is removed again)."""
        await self.core.apply(spec)
        cid = spec.cluster_id
        self._undo = lambda: self.core.restore(restore, cid)

    async def terminate(self, *, restore: ClusterSpec | None) -> None:
        """Remove the cluster's replicas; if the commit fails, start `restore` again
        (None: nothing ran, nothing to restore)."""
        cid = self.cluster_id
        await self.core.terminate(cid)

        async def undo() -> bool:
            return True if restore is None else await self.core.restore(restore, cid)

        self._undo = undo

    def event(self, c: Cluster, kind: str, message: str, replica: str | None = None) -> None:
        self.events.append(self.core.event(c, kind, message, self.now, replica))

    def save(self, c: Cluster) -> None:
        self.core.store.update_cluster(c)
        self.changed = c

    async def commit(
        self,
        body: Callable[[], T],
        *,
        money: bool = False,
        follow: bool = False,
        track: bool | None = None,
        undone: str = "nothing was changed",
    ) -> T:
        """Run `body` and keep its result as the answer, in one transaction.
        `money`: the account's balance moved; `follow`: derive the status from the
        replicas again once published; `track`: start (True) or stop (False) telemetry."""

        def tx() -> T:
            result = body()
            self._record(result)
            return result

        result = await self.core.commit(tx, self._undo, undone)
        if isinstance(result, Cluster):
            self.changed = result
        self._money, self._follow, self._track = money, follow, track
        return result

    async def unchanged(self, c: Cluster) -> Cluster:
        """An action that changes nothing still keeps its answer for retries."""
        if self.idem is not None:
            self.now = self.core.now()
            await self.core.commit(lambda: self._record(c))
        return c

    # -- idempotency --------------------------------------------------------------------
    async def _check_replay(self) -> None:
        idem = self.idem
        if idem is None:
            return
        store, account_id, key, now = self.core.store, self.account_id, idem.key, self.now
        rec = await self.read(lambda: store.idempotency(account_id, key, now))
        if rec is None:
            return
        if rec.fingerprint != idem.fingerprint:
            raise Conflict("this Idempotency-Key was used with a different request")
        raise Replayed(StoredAnswer(rec.status, rec.content_type, rec.body))

    def _record(self, result: object) -> None:
        idem = self.idem
        if idem is None:
            return
        answer = self.core.on_loop(lambda: idem.record(result))
        self.core.store.save_idempotency(
            IdempotencyRecord(
                self.account_id,
                idem.key,
                idem.fingerprint,
                answer.status,
                answer.content_type,
                answer.body,
                self.now,
            )
        )
