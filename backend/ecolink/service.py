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
(the store is the source of truth), so nothing is ever half-applied. Charges never change what an account has available, so the reaper's
charges and the runtime listener's status updates cannot invalidate a check made in 1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import re
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ecocore import billing
from ecocore.billing import ACCRUING, BUDGETED, ClusterMoney
from ecocore.clock import Clock
from ecocore.money import format_usd
from ecolink.catalog import Catalog
from ecolink.clock import monotonic
from ecolink.errors import (
    Conflict,
    InsufficientBalance,
    InvalidField,
    NotFound,
    StoreUnavailableError,
)
from ecolink.runtime.base import (
    ClusterSpec,
    ReplicaNotFound,
    ReplicaState,
    Runtime,
    RuntimeUnavailable,
)
from ecolink.store import (
    Account,
    Cluster,
    Event,
    IdempotencyRecord,
    LedgerEntry,
    Store,
    StoreBusy,
    new_id,
    rfc3339,
    to_us,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

US = 1_000_000
TERMINAL = frozenset({"terminated", "failed"})
LIVE = frozenset({"pending", "running", "stopping", "stopped", "terminating"})
EXPIRABLE = ("pending", "running", "stopping", "stopped")
STATUSES = ("pending", "running", "stopping", "stopped", "terminating", "terminated", "failed")
LISTED_AFTER_TERMINATION_US = 7 * 24 * 3600 * US
CHARGE_BATCH = 50
WARNINGS = ((1, 30 * 60 * US), (2, 5 * 60 * US))  # (bit, how long before expiry)
NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$")


class Observer(Protocol):
    """Who wants to hear about changes (the watch hub)."""

    def cluster_changed(self, account_id: str, cluster_id: str) -> None: ...

    def account_changed(self, account_id: str) -> None: ...

    def event_added(self, event: Event) -> None: ...


class Tracker(Protocol):
    """The part of the telemetry hub the service drives."""

    def track(self, cluster_id: str) -> None: ...

    def untrack(self, cluster_id: str) -> None: ...


@dataclass(frozen=True)
class LaunchRequest:
    """A launch, already checked for types and ranges by the API layer."""

    name: str
    region: str
    gpu_type: str
    gpu_count: int
    replicas: int
    image: str
    duration_mh: int
    startup_command: str | None = None
    shared_filesystems: tuple[str, ...] = ()
    expose_port: int | None = None


@dataclass(frozen=True)
class Idempotency:
    """An `Idempotency-Key` and what to store as the answer once the action commits.

    `respond` turns the action's result into (status, content type, body)."""

    key: str
    fingerprint: str
    respond: Callable[[object], tuple[int, str, bytes]]


class Replay(Exception):
    """Not an error: the stored first answer to a retried request."""

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        super().__init__("idempotent replay")
        self.status = status
        self.content_type = content_type
        self.body = body


@contextlib.contextmanager
def _runtime_errors() -> Iterator[None]:
    """Runtime failures pass through as they are: the API answers RuntimeUnavailable
    503 and RuntimeRefused 409/422, and nothing was changed (api/errors.py)."""
    yield


def money_of(c: Cluster) -> ClusterMoney:
    return ClusterMoney(c.hold_total, c.released_total, c.spent_total)


class ClusterService:
    """The use cases. Also the runtime's listener (`replicas_changed`, ...)."""

    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        catalog: Catalog,
        clock: Clock,
        *,
        filesystems: Callable[[], list[dict[str, str]]] | None = None,
        tracker: Tracker | None = None,
        charge_interval_s: float = 60.0,
        tick_s: float = 5.0,
        reconcile_grace_s: float = 15.0,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.catalog = catalog
        self.clock = clock
        self.filesystems: Callable[[], list[dict[str, str]]] = filesystems or (lambda: [])
        self.tracker = tracker
        self.charge_interval_us = int(charge_interval_s * US)
        self.tick_s = tick_s
        self.observers: list[Observer] = []
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Runtime events for clusters whose launch has not committed yet.
        # (Read and written from the event loop and the store's writer thread.)
        self._early_events: dict[str, list[tuple[int, str, str, str | None]]] = {}
        self._early_lock = threading.Lock()
        # Differences between store and runtime seen once: cluster id -> when.
        self._suspects: dict[str, float] = {}
        self.reconcile_grace_s = reconcile_grace_s
        self._last_now = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()
        self._runtime_started = False
        self.started = False

    # ------------------------------------------------------------------ helpers
    def now(self) -> int:
        """The clock's time in microseconds, never earlier than a time already used:
        a wall clock stepped backwards must not open or bill time twice."""
        now = to_us(self.clock.now())
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    @contextlib.asynccontextmanager
    async def _locked(self, account_id: str) -> AsyncIterator[None]:
        async with self._locks[account_id]:
            yield

    def _notify_cluster(self, c: Cluster) -> None:
        for o in self.observers:
            try:
                o.cluster_changed(c.account_id, c.id)
            except Exception:
                log.exception("observer failed")

    def _notify_account(self, account_id: str) -> None:
        for o in self.observers:
            try:
                o.account_changed(account_id)
            except Exception:
                log.exception("observer failed")

    def _notify_event(self, ev: Event) -> None:
        for o in self.observers:
            try:
                o.event_added(ev)
            except Exception:
                log.exception("observer failed")

    def _spec(self, c: Cluster, run: bool) -> ClusterSpec:
        return ClusterSpec(
            cluster_id=c.id,
            account_id=c.account_id,
            name=c.name,
            region=c.region,
            gpu_type=c.gpu_type,
            gpu_count=c.gpu_count,
            replicas=c.replicas if run else 0,
            image=c.image,
            startup_command=c.startup_command,
            shared_filesystems=c.shared_filesystems,
            endpoint_port=c.endpoint_port,
            node_selector=self.catalog.node_selector(c.region, c.gpu_type),
            expires_at=rfc3339(c.expires_at),
        )

    def spec_for(self, c: Cluster) -> ClusterSpec:
        """The spec the runtime should run for `c` in its current state."""
        return self._spec(c, run=c.status in ACCRUING)

    async def _apply(self, spec: ClusterSpec) -> None:
        with _runtime_errors():
            await self.runtime.apply(spec)

    async def _compensate(self, spec: ClusterSpec | None, cluster_id: str) -> bool:
        """Best effort: put the runtime back after a commit that did not happen.
        True when it is back; else the reaper finds the difference and repairs it."""
        try:
            if spec is None:
                await self.runtime.terminate(cluster_id)
            else:
                await self.runtime.apply(spec)
        except Exception:
            log.exception("could not put cluster %s back; the reaper will reconcile it",
                          cluster_id)
            return False
        return True

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the event loop (answers are rendered there: they read the
        runtime's state) and wait for it; called from the writer thread."""
        loop = self._loop
        if loop is None or self._loop_thread is threading.current_thread():
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    async def _commit(self, body: Callable[[], T],
                      undo: Callable[[], Awaitable[bool]] | None = None,
                      undone: str = "nothing was changed") -> T:
        """Run `body` as one transaction in the store's writer thread.

        If it does not commit, `undo` puts the runtime back as it was, so the action
        did not happen. A database that cannot be written answers 503 saying what
        became of the action: `undone` when the runtime is back (only then, for
        actions whose undo is exact, is that "nothing was changed")."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            self._loop_thread = threading.current_thread()
        try:
            return await self.store.run_write(body)
        except StoreBusy as exc:
            log.warning("a transaction could not be stored: %s", exc)
            restored = True if undo is None else await undo()
            if restored:
                raise StoreUnavailableError(
                    "the database cannot be written now (another process holds it, or the "
                    f"disk failed); {undone}; try again") from exc
            raise StoreUnavailableError(
                "the database cannot be written now, and the runtime could not be put back "
                "yet; no money moved, and the backend restores the cluster to its last "
                "stored state") from exc
        except BaseException:
            if undo is not None:
                await undo()
            raise

    def _check_idempotency(self, account_id: str, idem: Idempotency | None, now: int) -> None:
        if idem is None:
            return
        rec = self.store.idempotency(account_id, idem.key, now)
        if rec is None:
            return
        if rec.fingerprint != idem.fingerprint:
            raise Conflict("this Idempotency-Key was used with a different request")
        raise Replay(rec.status, rec.content_type, rec.body)

    def _save_idempotency(
        self, account_id: str, idem: Idempotency | None, result: object, now: int
    ) -> None:
        if idem is None:
            return
        status, content_type, body = self._on_loop(lambda: idem.respond(result))
        self.store.save_idempotency(
            IdempotencyRecord(account_id, idem.key, idem.fingerprint, status, content_type,
                              body, now)
        )

    async def _no_change(self, account_id: str, idem: Idempotency | None, result: object) -> None:
        """An action that changes nothing still records its answer for retries."""
        if idem is not None:
            now = self.now()
            await self._commit(lambda: self._save_idempotency(account_id, idem, result, now))

    def _event(self, c: Cluster, kind: str, message: str, at: int,
               replica: str | None = None) -> Event:
        return self.store.add_event(c.account_id, c.id, at, kind, message, replica)

    def _check_budget(self, account_id: str, region: str, gpus_needed: int,
                      exclude: str | None) -> None:
        r = self.catalog.region(region)
        budget = r.gpu_budget if r is not None else 0
        used = self.store.gpus_in_use(account_id, region, BUDGETED, exclude)
        if used + gpus_needed > budget:
            free = max(0, budget - used)
            raise Conflict(
                f"over the GPU budget of region {region}: {gpus_needed} GPUs needed, "
                f"{free} of {budget} free"
            )

    def _check_balance(self, account_id: str, needed: int) -> None:
        acct = self.store.account(account_id)
        available = acct.available if acct else 0
        short = billing.missing(available, needed)
        if short > 0:
            raise InsufficientBalance(
                f"insufficient balance: the hold needs ${format_usd(needed)}, "
                f"${format_usd(available)} is available, ${format_usd(short)} missing"
            )

    # -- ledger pieces (inside a transaction; they mutate `c`) ---------------
    def _hold(self, c: Cluster, amount: int, memo: str, at: int) -> None:
        if amount <= 0:
            return
        self._check_balance(c.account_id, amount)
        self.store.post(c.account_id, c.id, "hold", amount, memo, at)
        c.hold_total += amount

    def _settle(self, c: Cluster, until: int, at: int) -> None:
        """Post the charge due up to `until` (never past expiry)."""
        until = min(until, c.expires_at)
        due = billing.charge_due(money_of(c), self.store.segments(c.id), until)
        if due > 0:
            self.store.post(c.account_id, c.id, "charge", -due, "usage", at)
            c.spent_total += due
        if until > c.last_charge_at:
            c.last_charge_at = until

    def _release(self, c: Cluster, memo: str, at: int) -> None:
        rest = money_of(c).remaining
        if rest > 0:
            self.store.post(c.account_id, c.id, "hold_release", -rest, memo, at)
            c.released_total += rest

    def _stop_accruing(self, c: Cluster, until: int, at: int) -> None:
        """Post charges up to `until`, then close the time segment."""
        if self.store.has_open_segment(c.id):
            self._settle(c, until, at)
            self.store.close_segment(c.id, min(until, c.expires_at))

    def _hourly(self, c: Cluster, replicas: int | None = None) -> int:
        return billing.hourly_rate(c.rate_per_gpu_hour, c.gpu_count,
                                   c.replicas if replicas is None else replicas)

    def _derive_status(self, c: Cluster, now: int,
                       states: Sequence[ReplicaState] | None = None) -> None:
        """Move pending -> running and stopping -> stopped from the observed replicas
        (`states`: read from the runtime on the event loop before a transaction)."""
        if states is None:
            states = self.runtime.replicas(c.id)
        if c.status == "pending":
            running = sum(1 for s in states if s.phase == "Running")
            if running >= c.replicas > 0:
                c.status = "running"
                c.started_at = now
        elif c.status == "stopping":
            if not any(s.phase in ("Pending", "Running", "Unknown") for s in states):
                c.status = "stopped"

    def _follow_runtime(self, c: Cluster) -> None:
        """Derive the status again from the replicas as they are now: reports that came
        while the action's transaction was being written found the old record (or no
        cluster yet, during a launch)."""
        probe = dataclasses.replace(c)
        self._derive_status(probe, self.now())
        if probe.status != c.status:
            self._spawn(self._save_status(c.id, c.status, probe.status, probe.started_at))

    def _update_warnings(self, c: Cluster, now: int) -> None:
        """Forget warnings whose moment moved out again (after an extension)."""
        for bit, before in WARNINGS:
            if c.warned & bit and c.expires_at - now > before:
                c.warned &= ~bit

    # ------------------------------------------------------------------ queries
    def get_cluster(self, account_id: str, ref: str) -> Cluster:
        c = self.store.find_cluster(account_id, ref)
        if c is None:
            raise NotFound(f"no cluster {ref!r}")
        return c

    def cluster_by_id(self, cluster_id: str) -> Cluster | None:
        return self.store.cluster(cluster_id)

    def list_clusters(self, account_id: str, statuses: Sequence[str] | None = None) -> list[Cluster]:
        return self.store.list_clusters(
            account_id,
            statuses=statuses,
            terminated_since=self.now() - LISTED_AFTER_TERMINATION_US,
        )

    def account(self, account_id: str) -> Account:
        acct = self.store.account(account_id)
        if acct is None:
            raise NotFound("no such account")
        return acct

    def ledger(self, account_id: str, *, cluster_id: str | None = None, limit: int = 100,
               before: int | None = None) -> list[LedgerEntry]:
        return self.store.ledger(account_id, cluster_id=cluster_id, limit=limit, before=before)

    def events(self, cluster_id: str, limit: int = 1000) -> list[Event]:
        return self.store.events(cluster_id, limit)

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        return self.runtime.replicas(cluster_id)

    def hourly_rate(self, c: Cluster) -> int:
        return self._hourly(c)

    def burn_rate(self, c: Cluster) -> int:
        return self._hourly(c) if c.status in ACCRUING and not c.suspended else 0

    # ------------------------------------------------------------------ launch
    def validate_launch(self, req: LaunchRequest) -> None:
        """The catalog-dependent field checks (422), in api.md's field order."""
        region = self.catalog.region(req.region)
        if region is None:
            raise InvalidField(f"unknown region {req.region!r}", field="region")
        gtype = region.gpu_type(req.gpu_type)
        if gtype is None:
            raise InvalidField(f"region {req.region} has no GPU type {req.gpu_type!r}",
                               field="gpu_type")
        if req.gpu_count not in gtype.gpu_counts:
            counts = ", ".join(str(n) for n in gtype.gpu_counts)
            raise InvalidField(f"gpu_count must be one of {counts}", field="gpu_count")
        if req.shared_filesystems:
            known = {f["name"] for f in self.filesystems()}
            for fs in req.shared_filesystems:
                if fs not in known:
                    raise InvalidField(f"no shared filesystem {fs!r}", field="shared_filesystems")

    async def launch(self, account_id: str, req: LaunchRequest,
                     idem: Idempotency | None = None) -> Cluster:
        self.validate_launch(req)
        region = self.catalog.region(req.region)
        assert region is not None
        gtype = region.gpu_type(req.gpu_type)
        assert gtype is not None
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            if self.store.name_in_use(account_id, req.name):
                raise Conflict(f"a cluster named {req.name!r} exists", field="name")
            self._check_budget(account_id, req.region, req.gpu_count * req.replicas, None)
            rate = billing.hourly_rate(gtype.rate_per_gpu_hour, req.gpu_count, req.replicas)
            hold = billing.hold_for_hours(rate, req.duration_mh)
            self._check_balance(account_id, hold)
            c = Cluster(
                id=new_id("gc"),
                account_id=account_id,
                name=req.name,
                region=req.region,
                gpu_type=req.gpu_type,
                gpu_count=req.gpu_count,
                replicas=req.replicas,
                image=req.image,
                startup_command=req.startup_command,
                shared_filesystems=req.shared_filesystems,
                rate_per_gpu_hour=gtype.rate_per_gpu_hour,
                status="pending",
                status_reason=None,
                created_at=now,
                started_at=None,
                expires_at=now + billing.micro_hours_to_us(req.duration_mh),
                duration_mh=req.duration_mh,
                endpoint_port=req.expose_port,
                suspended=False,
                terminated_at=None,
                warned=0,
                hold_total=0,
                released_total=0,
                spent_total=0,
                last_charge_at=now,
                version=0,
            )
            with self._early_lock:
                self._early_events[c.id] = []
            try:
                await self._apply(self._spec(c, run=True))
                states = self.runtime.replicas(c.id)

                def body() -> list[Event]:
                    self.store.insert_cluster(c)
                    self._hold(c, hold, f"launch: {_hours(req.duration_mh)} h at "
                                        f"${format_usd(rate)}/h", now)
                    self.store.open_segment(c.id, now, rate)
                    self._derive_status(c, now, states)
                    self._update_warnings(c, now)
                    self.store.update_cluster(c)
                    events = [self._event(
                        c, "launched",
                        f"launched {c.replicas} x {c.gpu_count} {c.gpu_type} in {c.region} "
                        f"for {_hours(req.duration_mh)} h; hold ${format_usd(hold)}", now)]
                    if c.endpoint_port is not None:
                        events.append(self._event(
                            c, "endpoint_changed",
                            f"public URL opened on port {c.endpoint_port}", now))
                    with self._early_lock:
                        early = list(self._early_events.get(c.id, []))
                    for at, kind, msg, replica in early:
                        events.append(self._event(c, kind, msg, at, replica))
                    self._save_idempotency(account_id, idem, c, now)
                    with self._early_lock:
                        # From here on runtime events find the cluster in the store.
                        self._early_events.pop(c.id, None)
                    return events

                events = await self._commit(body, lambda: self._compensate(None, c.id))
            finally:
                with self._early_lock:
                    self._early_events.pop(c.id, None)
        if self.tracker is not None:
            self.tracker.track(c.id)
        self._follow_runtime(c)
        self._notify_cluster(c)
        self._notify_account(account_id)
        for ev in events:
            self._notify_event(ev)
        return c

    # ------------------------------------------------------------------ actions on a cluster
    async def _current(self, account_id: str, ref: str, now: int) -> Cluster:
        """The cluster, expired first if its time is up (the reaper may lag)."""
        c = self.get_cluster(account_id, ref)
        if c.status in LIVE and c.status != "terminating" and c.expires_at <= now:
            await self._expire_locked(c, now)
            c = self.get_cluster(account_id, c.id)
        return c

    async def scale(self, account_id: str, ref: str, replicas: int,
                    idem: Idempotency | None = None) -> Cluster:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if c.status in TERMINAL or c.status == "terminating":
                raise Conflict(f"cannot scale a {c.status} cluster")
            old = c.replicas
            if replicas == old:
                await self._no_change(account_id, idem, c)
                return c
            running = c.status in ACCRUING
            extra_hold = 0
            undo: Callable[[], Awaitable[bool]] | None = None
            if running:
                if replicas > old:
                    self._check_budget(account_id, c.region, c.gpu_count * replicas, c.id)
                per_replica = billing.per_replica_rate(c.rate_per_gpu_hour, c.gpu_count)
                extra_hold = billing.scale_up_hold(per_replica, old, replicas,
                                                   c.expires_at - now)
                self._check_balance(account_id, extra_hold)
                new = dataclasses.replace(c, replicas=replicas)
                await self._apply(self._spec(new, run=True))
                before = self._spec(c, run=True)

                def undo() -> Awaitable[bool]:
                    return self._compensate(before, c.id)
            states = self.runtime.replicas(c.id)

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                if running and not c.suspended:
                    self._stop_accruing(c, now, now)
                    self.store.open_segment(c.id, now, self._hourly(c, replicas))
                c.replicas = replicas
                self._hold(c, extra_hold, f"scale {old} -> {replicas} replicas", now)
                if running:
                    self._derive_status(c, now, states)
                self.store.update_cluster(c)
                ev = self._event(c, "scaled", f"scaled from {old} to {replicas} replicas"
                                 + (f"; hold ${format_usd(extra_hold)}" if extra_hold else ""),
                                 now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(body, undo)
        self._follow_runtime(c)
        self._notify_cluster(c)
        self._notify_account(account_id)
        self._notify_event(ev)
        return c

    async def extend(self, account_id: str, ref: str, micro_hours: int,
                     idem: Idempotency | None = None) -> Cluster:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if c.duration_mh + micro_hours > billing.MAX_DURATION_MICRO_HOURS:
                left = billing.MAX_DURATION_MICRO_HOURS - c.duration_mh
                raise InvalidField(
                    f"a cluster runs at most 720 h in total; at most {_hours(left)} h more",
                    field="hours")
            if c.status in TERMINAL or c.status == "terminating":
                raise Conflict(f"cannot extend a {c.status} cluster")
            running = c.status in ACCRUING
            hold = billing.hold_for_hours(self._hourly(c), micro_hours) if running else 0
            self._check_balance(account_id, hold)

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                if running and not c.suspended:
                    self._settle(c, now, now)
                self._hold(c, hold, f"extend by {_hours(micro_hours)} h", now)
                c.expires_at += billing.micro_hours_to_us(micro_hours)
                c.duration_mh += micro_hours
                self._update_warnings(c, now)
                self.store.update_cluster(c)
                ev = self._event(c, "extended", f"extended by {_hours(micro_hours)} h"
                                 + (f"; hold ${format_usd(hold)}" if hold else ""), now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(body)
        self._notify_cluster(c)
        self._notify_account(account_id)
        self._notify_event(ev)
        self._wake.set()
        try:  # replicas learn the new expiry; the extend stands either way
            await self.runtime.expiry_changed(c.id, rfc3339(c.expires_at))
        except Exception:
            log.warning("could not tell the replicas of %s the new expiry", c.id, exc_info=True)
        return c

    async def stop(self, account_id: str, ref: str, idem: Idempotency | None = None) -> Cluster:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if c.status in ("stopping", "stopped"):
                await self._no_change(account_id, idem, c)
                return c
            if c.status in TERMINAL or c.status == "terminating":
                raise Conflict(f"cannot stop a {c.status} cluster")
            before = self._spec(c, run=True)
            await self._apply(self._spec(c, run=False))
            states = self.runtime.replicas(c.id)

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                self._stop_accruing(c, now, now)
                self._release(c, "stop: release the unused hold", now)
                c.status = "stopping"
                c.suspended = False
                self._derive_status(c, now, states)
                self.store.update_cluster(c)
                ev = self._event(c, "stopped", "stopped", now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(body, lambda: self._compensate(before, c.id))
        self._follow_runtime(c)
        self._notify_cluster(c)
        self._notify_account(account_id)
        self._notify_event(ev)
        return c

    async def resume(self, account_id: str, ref: str, idem: Idempotency | None = None) -> Cluster:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if c.status in ACCRUING:
                await self._no_change(account_id, idem, c)
                return c
            if c.status != "stopped" and c.status != "stopping":
                raise Conflict(f"cannot resume a {c.status} cluster")
            self._check_budget(account_id, c.region, c.gpu_count * c.replicas, c.id)
            hold = billing.hold_for_duration(self._hourly(c), c.expires_at - now)
            self._check_balance(account_id, hold)
            before = self._spec(c, run=False)
            await self._apply(self._spec(c, run=True))
            states = self.runtime.replicas(c.id)

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                self._hold(c, hold, "resume: hold for the time to expiry", now)
                self.store.open_segment(c.id, now, self._hourly(c))
                c.last_charge_at = max(c.last_charge_at, now)
                c.status = "pending"
                c.started_at = None
                self._derive_status(c, now, states)
                self.store.update_cluster(c)
                ev = self._event(c, "resumed", f"resumed; hold ${format_usd(hold)}", now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(body, lambda: self._compensate(before, c.id))
        if self.tracker is not None:
            self.tracker.track(c.id)
        self._follow_runtime(c)
        self._notify_cluster(c)
        self._notify_account(account_id)
        self._notify_event(ev)
        return c

    async def terminate(self, account_id: str, ref: str,
                        idem: Idempotency | None = None) -> Cluster:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if c.status == "terminated":
                await self._no_change(account_id, idem, c)
                return c
            # What runs now, to start again if the store cannot record the termination:
            # a cluster the store still calls running must have its replicas.
            before = self.spec_for(c) if c.status in ACCRUING else None
            with _runtime_errors():
                await self.runtime.terminate(c.id)

            async def undo() -> bool:
                if before is None:
                    return True
                return await self._compensate(before, c.id)

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                self._stop_accruing(c, now, now)
                self._release(c, "terminate: release the unused hold", now)
                c.status = "terminated"
                if c.status_reason is None:
                    c.status_reason = "user"
                c.terminated_at = now
                c.suspended = False
                self.store.update_cluster(c)
                ev = self._event(c, "terminated", "terminated by the user", now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(
                body, undo, undone=(
                    "the cluster was not terminated: it runs on, its replicas started again "
                    "(with new working directories), and no money moved"
                    if before is not None else "nothing was changed"))
        if self.tracker is not None:
            self.tracker.untrack(c.id)
        self._notify_cluster(c)
        self._notify_account(account_id)
        self._notify_event(ev)
        return c

    async def restart(self, account_id: str, ref: str, idem: Idempotency | None = None) -> Cluster:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if c.status not in ACCRUING:
                raise Conflict(f"cannot restart a {c.status} cluster")
        # The rolling restart may take a while: it changes no money, so it runs
        # without holding the account's lock.
        with _runtime_errors():
            await self.runtime.restart(c.id)
        async with self._locked(account_id):
            now = self.now()

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                ev = self._event(c, "restarted", "rolling restart of every replica", now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(body)
        self._notify_cluster(c)
        self._notify_event(ev)
        return c

    async def restart_replica(self, account_id: str, ref: str, replica: str,
                              idem: Idempotency | None = None) -> ReplicaState:
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            if not any(s.name == replica for s in self.runtime.replicas(c.id)):
                raise NotFound(f"no replica {replica!r} in cluster {c.name}", field="replica")
            if c.status not in ACCRUING:
                raise Conflict(f"cannot restart a replica of a {c.status} cluster")
        try:
            with _runtime_errors():
                await self.runtime.restart(c.id, replica)
        except ReplicaNotFound as exc:
            raise NotFound(f"no replica {replica!r} in cluster {c.name}", field="replica") from exc
        state = next((s for s in self.runtime.replicas(c.id) if s.name == replica), None)
        if state is None:
            state = ReplicaState(name=replica, index=0, phase="Pending", ready=False)
        async with self._locked(account_id):
            now = self.now()

            def body() -> Event:
                ev = self._event(c, "restarted", f"replica {replica} restarted", now, replica)
                self._save_idempotency(account_id, idem, state, now)
                return ev

            ev = await self._commit(body)
        self._notify_cluster(c)
        self._notify_event(ev)
        return state

    async def _set_port(self, account_id: str, ref: str, port: int | None,
                        idem: Idempotency | None) -> Cluster:
        """Open, move or close the public URL (`port` None closes it)."""
        async with self._locked(account_id):
            now = self.now()
            self._check_idempotency(account_id, idem, now)
            c = await self._current(account_id, ref, now)
            cid = c.id
            if port is not None and c.status in ("terminated", "terminating"):
                raise Conflict(f"cannot open the public URL of a {c.status} cluster")
            old = c.endpoint_port
            if old == port:
                await self._no_change(account_id, idem, c)
                return c
            active = c.status in ACCRUING
            undo: Callable[[], Awaitable[bool]] | None = None
            if active:
                before = self._spec(c, run=True)
                await self._apply(self._spec(dataclasses.replace(c, endpoint_port=port),
                                             run=True))

                def undo() -> Awaitable[bool]:
                    return self._compensate(before, c.id)

            def body() -> tuple[Cluster, Event]:
                c = self.get_cluster(account_id, cid)
                c.endpoint_port = port
                self.store.update_cluster(c)
                if port is None:
                    msg = "public URL closed"
                elif old is None:
                    msg = f"public URL opened on port {port}"
                else:
                    msg = f"public URL now forwards to port {port} (was {old})"
                ev = self._event(c, "endpoint_changed", msg, now)
                self._save_idempotency(account_id, idem, c, now)
                return c, ev

            c, ev = await self._commit(body, undo)
        self._notify_cluster(c)
        self._notify_event(ev)
        return c

    async def set_endpoint(self, account_id: str, ref: str, port: int,
                           idem: Idempotency | None = None) -> Cluster:
        return await self._set_port(account_id, ref, port, idem)

    async def close_endpoint(self, account_id: str, ref: str,
                             idem: Idempotency | None = None) -> Cluster:
        return await self._set_port(account_id, ref, None, idem)

    # ------------------------------------------------------------------ expiry and charges
    async def _expire_locked(self, c: Cluster, now: int) -> None:
        """Settle and release at `expires_at`, then remove the cluster from the runtime.

        The money side commits first: expiry is not a request that can be refused, and
        charges stop at expires_at whatever the runtime says. If the runtime cannot be
        reached the cluster stays `terminating` and the reaper tries again."""
        cid = c.id

        def body() -> tuple[Cluster, Event] | None:
            c = self.store.cluster(cid)
            if c is None or c.status in TERMINAL or c.status == "terminating":
                return None
            self._stop_accruing(c, c.expires_at, now)
            self._release(c, "expiry: release the unused hold", now)
            c.status = "terminating"
            c.status_reason = "expired"
            c.suspended = False
            self.store.update_cluster(c)
            ev = self._event(c, "expired", "the cluster reached its expiry and was terminated",
                             now)
            return c, ev

        done = await self._commit(body)
        if done is None:
            return
        c, ev = done
        self._notify_cluster(c)
        self._notify_account(c.account_id)
        self._notify_event(ev)
        if self._runtime_started:
            await self._finish_terminating(c)

    async def _finish_terminating(self, c: Cluster) -> None:
        try:
            await self.runtime.terminate(c.id)
        except RuntimeUnavailable:
            log.warning("cannot reach the runtime to remove %s; will retry", c.id)
            return
        except Exception:
            log.exception("removing %s failed; will retry", c.id)
            return
        now = self.now()

        def body() -> Cluster | None:
            fresh = self.store.cluster(c.id)
            if fresh is None or fresh.status != "terminating":
                return None
            fresh.status = "terminated"
            fresh.terminated_at = now
            self.store.update_cluster(fresh)
            return fresh

        fresh = await self._commit(body)
        if fresh is None:
            return
        if self.tracker is not None:
            self.tracker.untrack(c.id)
        self._notify_cluster(fresh)

    async def expire_due(self) -> int:
        """Expire every cluster whose time is up; returns how many."""
        now = self.now()
        n = 0
        deadlines = await self.store.run_read(lambda: self.store.deadlines(EXPIRABLE))
        for cid, account_id, expires_at, _ in deadlines:
            if expires_at <= now:
                async with self._locked(account_id):
                    fresh = self.store.cluster(cid)
                    if fresh is not None and fresh.status in EXPIRABLE and fresh.expires_at <= now:
                        await self._expire_locked(fresh, now)
                        n += 1
        return n

    async def post_charges(self, *, force: bool = False) -> int:
        """Post what accrued for every accruing cluster not charged in the last
        interval (all of them with `force`). Returns how many charges were posted."""
        now = self.now()
        due_before = now if force else now - int(self.charge_interval_us * 5 / 6)
        by_account: dict[str, list[Cluster]] = defaultdict(list)
        accruing = await self.store.run_read(
            lambda: self.store.list_clusters(None, statuses=ACCRUING))
        for c in accruing:
            if not c.suspended and c.last_charge_at <= due_before and c.expires_at > now:
                by_account[c.account_id].append(c)
        posted = 0
        for account_id, clusters in by_account.items():
            changed = False
            # In batches, one transaction each: a thousand clusters' charges must not
            # hold the writer for long.
            for i in range(0, len(clusters), CHARGE_BATCH):
                batch = clusters[i:i + CHARGE_BATCH]

                def body(batch: list[Cluster] = batch) -> int:
                    n = 0
                    for stale in batch:
                        fresh = self.store.cluster(stale.id)
                        if (fresh is None or fresh.status not in ACCRUING
                                or fresh.suspended or fresh.expires_at <= now):
                            continue
                        before = fresh.spent_total
                        self._settle(fresh, now, now)
                        self.store.update_cluster(fresh)
                        if fresh.spent_total != before:
                            n += 1
                    return n

                async with self._locked(account_id):
                    n = await self._commit(body)
                posted += n
                changed = changed or n > 0
            # Periodic charges move the balance, not the cluster's state: watchers get
            # the account frame; clusters' `spent` shows with their next change (a
            # frame per cluster per minute would swamp a feed of a thousand clusters).
            if changed:
                self._notify_account(account_id)
        return posted

    async def warn_expiring(self) -> list[Event]:
        now = self.now()
        out: list[Event] = []
        deadlines = await self.store.run_read(lambda: self.store.deadlines(EXPIRABLE))
        for cid, _, expires_at, warned in deadlines:
            left = expires_at - now
            if left <= 0:
                continue
            new_bits = 0
            for bit, before in WARNINGS:
                if left <= before and not warned & bit:
                    new_bits |= bit
            if not new_bits:
                continue
            minutes = max(1, -(-left // (60 * US)))

            def body(cid: str = cid, new_bits: int = new_bits, left: int = left,
                     minutes: int = minutes) -> Event | None:
                fresh = self.store.cluster(cid)
                if fresh is None:
                    return None
                fresh.warned |= new_bits
                # Both moments may pass at once: one warning is enough.
                fresh.warned |= sum(bit for bit, before in WARNINGS if left <= before)
                self.store.update_cluster(fresh)
                return self._event(fresh, "expiry_warning",
                                   f"expires in {minutes} minute{'s' if minutes != 1 else ''}; "
                                   "extend it to keep it running", now)

            ev = await self._commit(body)
            if ev is not None:
                out.append(ev)
                self._notify_event(ev)
        return out

    def next_deadline(self) -> int | None:
        """The next expiry or warning moment (microseconds), for the reaper's sleep."""
        now = self.now()
        best: int | None = None
        for _, _, expires_at, warned in self.store.deadlines(EXPIRABLE):
            moments = [expires_at] + [expires_at - before for bit, before in WARNINGS
                                      if not warned & bit]
            for m in moments:
                if m > now and (best is None or m < best):
                    best = m
        return best

    async def reconcile(self) -> int:
        """Repair what differs between the store (the source of truth) and the runtime:
        a cluster that should run but whose replicas are gone (an action whose commit
        failed and whose undo failed too), a stopped cluster with replicas still
        running, a cluster the runtime runs that the store ended or never recorded.
        A difference must be seen on two rounds `reconcile_grace_s` apart (a runtime
        converges in its own time); each repair is logged and recorded as an event."""
        if not self._runtime_started:
            return 0
        mono = monotonic()
        seen: set[str] = set()
        repaired = 0

        def confirmed(cid: str) -> bool:
            seen.add(cid)
            first = self._suspects.setdefault(cid, mono)
            return mono - first >= self.reconcile_grace_s

        clusters = await self.store.run_read(lambda: self.store.list_clusters(
            None, statuses=("pending", "running", "stopped")))
        for c in clusters:
            live = [s for s in self.runtime.replicas(c.id)
                    if s.phase in ("Pending", "Running", "Unknown")]
            if c.status in ACCRUING:
                wrong = not self.runtime.replicas(c.id) and c.replicas > 0
                what = f"is {c.status} but the runtime runs none of its {c.replicas} replicas"
            else:
                wrong = bool(live)
                what = f"is stopped but the runtime still runs {len(live)} replicas"
            if not wrong or not confirmed(c.id):
                continue
            async with self._locked(c.account_id):
                fresh = self.store.cluster(c.id)
                if fresh is None or fresh.status != c.status:
                    continue
                log.warning("reconcile: cluster %s %s; putting the runtime back", c.id, what)
                try:
                    await self.runtime.apply(self.spec_for(fresh))
                except Exception as exc:
                    log.warning("reconcile: could not repair cluster %s: %s", c.id, exc)
                    continue
                now = self.now()
                message = (f"the runtime differed from the record (the cluster {what}); "
                           "it was put back")

                def record(f: Cluster = fresh, m: str = message, t: int = now) -> Event:
                    return self._event(f, "reconciled", m, t)

                ev = await self._commit(record)
            self._suspects.pop(c.id, None)
            self._notify_event(ev)
            repaired += 1
        ids = getattr(self.runtime, "cluster_ids", None)
        if ids is not None:
            for cid in list(ids()):
                with self._early_lock:
                    launching = cid in self._early_events
                if launching:
                    continue
                known = self.store.cluster(cid)
                if known is not None and known.status not in TERMINAL:
                    continue
                if not confirmed(cid):
                    continue
                log.warning("reconcile: the runtime runs cluster %s, which is %s in the store; "
                            "removing it", cid, "unknown" if known is None else known.status)
                try:
                    await self.runtime.terminate(cid)
                except Exception as exc:
                    log.warning("reconcile: could not remove cluster %s: %s", cid, exc)
                    continue
                self._suspects.pop(cid, None)
                repaired += 1
        for cid in set(self._suspects) - seen:
            del self._suspects[cid]
        return repaired

    async def tick(self) -> None:
        """One reaper round: expiry, warnings, charges, retries, repairs, pruning."""
        await self.expire_due()
        await self.warn_expiring()
        await self.post_charges()
        if self._runtime_started:
            terminating = await self.store.run_read(
                lambda: self.store.list_clusters(None, statuses=("terminating",)))
            for c in terminating:
                async with self._locked(c.account_id):
                    await self._finish_terminating(c)
        await self.reconcile()
        now = self.now()

        def prune() -> None:
            self.store.prune_idempotency(now)
            self.store.prune_console_sessions(now)

        await self._commit(prune)

    async def _reaper(self) -> None:
        while True:
            try:
                if not self._runtime_started:
                    await self._start_runtime()
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reaper round failed")
            delay = self.tick_s
            nxt = self.next_deadline()
            if nxt is not None:
                delay = min(delay, max(0.05, (nxt - self.now()) / US + 0.01))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    # ------------------------------------------------------------------ start and shutdown
    async def start(self, *, background: bool = True) -> None:
        """Reconcile after a start: expire what expired while down (charging only up to
        expires_at), resume accrual of clusters a clean shutdown suspended, hand the
        runtime the clusters it should run, start the reaper."""
        latest = await self.store.run_read(self.store.latest_time)
        if latest is not None:
            if latest > to_us(self.clock.now()):
                log.warning("the clock reads earlier than the last recorded time by %.1f s; "
                            "time is counted from the record, never backwards",
                            (latest - to_us(self.clock.now())) / US)
            self._last_now = max(self._last_now, latest)
        now = self.now()
        await self._commit(lambda: self.store.end_open_kept_sessions("backend_restart", now))
        await self.expire_due()

        def resume_accrual() -> None:
            for c in self.store.list_clusters(None, statuses=ACCRUING):
                if c.suspended:
                    c.suspended = False
                    self.store.open_segment(c.id, now, self._hourly(c))
                    c.last_charge_at = max(c.last_charge_at, now)
                    self.store.update_cluster(c)

        await self._commit(resume_accrual)
        await self._start_runtime()
        if background:
            self._task = asyncio.create_task(self._reaper(), name="ecolink-reaper")
        self.started = True

    async def _start_runtime(self) -> None:
        known = [self.spec_for(c) for c in self.store.list_clusters(
            None, statuses=("pending", "running", "stopping", "stopped"))]
        try:
            await self.runtime.start(self, known)
        except RuntimeUnavailable:
            log.warning("the runtime cannot be reached; retrying")
            return
        self._runtime_started = True
        for c in self.store.list_clusters(None, statuses=("terminating",)):
            await self._finish_terminating(c)
        now = self.now()
        for c in self.store.list_clusters(None, statuses=("pending", "running", "stopping")):
            before = c.status
            self._derive_status(c, now)
            if c.status != before:
                def save(c: Cluster = c) -> None:
                    self.store.update_cluster(c)

                await self._commit(save)
            if self.tracker is not None and c.status in ACCRUING:
                self.tracker.track(c.id)

    async def shutdown(self, *, stop_replicas: bool) -> None:
        """Stop the reaper and post charges up to now. With `stop_replicas` (the local
        runtime) the replicas stop with the backend, so accrual pauses until the next
        start; a runtime whose replicas keep running (kubernetes) keeps accruing."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for t in list(self._background):
            t.cancel()
        now = self.now()

        def final() -> None:
            for c in self.store.list_clusters(None, statuses=ACCRUING):
                if c.suspended:
                    continue
                if stop_replicas:
                    self._stop_accruing(c, now, now)
                    c.suspended = True
                else:
                    self._settle(c, now, now)
                self.store.update_cluster(c)

        try:
            await self._commit(final)
        except Exception:
            log.exception("posting the final charges failed")
        try:
            await self.runtime.shutdown(stop_replicas)
        except Exception:
            log.exception("runtime shutdown failed")

    # ------------------------------------------------------------------ RuntimeListener
    # The runtime calls these on the event loop: they read, and hand any write to a
    # task (the writer thread), so that a locked database never stalls the runtime.
    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def replicas_changed(self, cluster_id: str, replicas: Sequence[ReplicaState]) -> None:
        c = self.store.cluster(cluster_id)
        if c is None:
            return
        before = c.status
        now = self.now()
        self._derive_status(c, now, replicas)
        if c.status != before:
            self._spawn(self._save_status(cluster_id, before, c.status, c.started_at))
        self._notify_cluster(c)

    async def _save_status(self, cluster_id: str, before: str, status: str,
                           started_at: int | None) -> None:
        def body() -> Cluster | None:
            fresh = self.store.cluster(cluster_id)
            if fresh is None or fresh.status != before:
                return None
            fresh.status, fresh.started_at = status, started_at
            self.store.update_cluster(fresh)
            return fresh

        try:
            fresh = await self._commit(body)
        except StoreUnavailableError:
            log.warning("could not record that cluster %s is %s; the next change will",
                        cluster_id, status)
            return
        if fresh is not None:
            self._notify_cluster(fresh)

    def runtime_event(self, cluster_id: str, kind: str, message: str,
                      replica: str | None = None) -> None:
        now = self.now()
        with self._early_lock:
            early = self._early_events.get(cluster_id)
            if early is not None:
                early.append((now, kind, message, replica))
                return
        self._spawn(self._save_event(cluster_id, now, kind, message, replica))

    async def _save_event(self, cluster_id: str, now: int, kind: str, message: str,
                          replica: str | None) -> None:
        def body() -> Event | None:
            with self._early_lock:
                early = self._early_events.get(cluster_id)
                if early is not None:  # a launch that has not committed yet
                    early.append((now, kind, message, replica))
                    return None
            c = self.store.cluster(cluster_id)
            if c is None:
                return None
            return self._event(c, kind, message, now, replica)

        try:
            ev = await self._commit(body)
        except StoreUnavailableError:
            log.warning("could not record the event %s of cluster %s: %s", kind, cluster_id,
                        message)
            return
        if ev is not None:
            self._notify_event(ev)

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        self._spawn(self._fail(cluster_id, message))

    async def _fail(self, cluster_id: str, message: str) -> None:
        c = self.store.cluster(cluster_id)
        if c is None:
            return
        async with self._locked(c.account_id):
            now = self.now()

            def body() -> tuple[Cluster, Event] | None:
                c = self.store.cluster(cluster_id)
                if c is None or c.status not in ACCRUING:
                    return None
                self._stop_accruing(c, now, now)
                self._release(c, "failed: release the unused hold", now)
                c.status = "failed"
                c.status_reason = "error"
                self.store.update_cluster(c)
                ev = self._event(c, "replica_failed", f"the cluster failed: {message}", now)
                return c, ev

            done = await self._commit(body)
        if done is None:
            return
        c, ev = done
        if self.tracker is not None:
            self.tracker.untrack(c.id)
        self._notify_cluster(c)
        self._notify_account(c.account_id)
        self._notify_event(ev)


def _hours(micro_hours: int) -> str:
    whole, frac = divmod(micro_hours, US)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)
