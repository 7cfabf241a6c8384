"""What every part of the service shares: the store, the runtime, the clock that
never goes back, the per-account locks, and the one way a change is written (a
transaction in the store's writer thread, with the runtime put back if it fails)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ecocore.clock import Clock
from ecocore.status import ACCRUING
from ecolink.catalog import Catalog
from ecolink.errors import NotFound, StoreUnavailableError
from ecolink.runtime.base import ClusterSpec, Runtime
from ecolink.service.changes import ChangeBus
from ecolink.service.ledger import Ledger
from ecolink.store import Cluster, Event, Store, StoreBusy, rfc3339, to_us

log = logging.getLogger(__name__)
T = TypeVar("T")

Undo = Callable[[], Awaitable[bool]]


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
    # None: the backend's default grace.
    termination_grace_seconds: int | None = None


class AccountLock:
    """An account's lock: its actions, expiries and charges run one at a time. In
    this process an asyncio lock; on a database several instances share (Postgres),
    also the account's advisory lock there, so the instances take turns as well and
    two launches through two instances can never both spend the same credit."""

    def __init__(self, store: Store, account_id: str) -> None:
        self._local = asyncio.Lock()
        self._store = store
        self._account_id = account_id
        self._handle: object | None = None

    async def acquire(self) -> None:
        await self._local.acquire()
        try:
            self._handle = await self._store.lock_account(self._account_id)
        except BaseException as exc:
            self._local.release()
            if isinstance(exc, StoreBusy):
                raise StoreUnavailableError(
                    f"the database cannot be reached now ({exc}); nothing was changed; try again"
                ) from exc
            raise

    def release(self) -> None:
        handle, self._handle = self._handle, None
        self._store.unlock_account(handle)
        self._local.release()

    def locked(self) -> bool:
        return self._local.locked()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()


class Core:
    def __init__(
        self,
        store: Store,
        runtime: Runtime,
        catalog: Catalog,
        clock: Clock,
        tracker: Tracker | None,
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.catalog = catalog
        self.clock = clock
        self.tracker = tracker
        self.bus = ChangeBus()
        self.ledger = Ledger(store, catalog)
        self.runtime_started = False
        # Set to make the reaper look at its deadlines again at once.
        self.wake = asyncio.Event()
        self._locks: dict[str, AccountLock] = {}
        self._last_now = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    # -- time and locks --------------------------------------------------------
    def now(self) -> int:
        """The clock's time in microseconds, never earlier than a time already used:
        a wall clock stepped backwards must not open or bill time twice."""
        now = to_us(self.clock.now())
        if now < self._last_now:
            return self._last_now
        self._last_now = now
        return now

    def not_before(self, at: int) -> None:
        """Count time from `at` at the earliest (the last time the store recorded)."""
        self._last_now = max(self._last_now, at)

    def lock(self, account_id: str) -> AccountLock:
        """The account's lock: its actions, expiries and charges run one at a time."""
        found = self._locks.get(account_id)
        if found is None:
            found = self._locks[account_id] = AccountLock(self.store, account_id)
        return found

    # -- reads -----------------------------------------------------------------
    def get_cluster(self, account_id: str, ref: str) -> Cluster:
        c = self.store.find_cluster(account_id, ref)
        if c is None:
            raise NotFound(f"no cluster {ref!r}")
        return c

    def spec(self, c: Cluster, run: bool) -> ClusterSpec:
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
            termination_grace_s=c.termination_grace_seconds,
        )

    def spec_for(self, c: Cluster) -> ClusterSpec:
        """The spec the runtime should run for `c` in its current state."""
        return self.spec(c, run=c.status in ACCRUING)

    # -- the runtime -----------------------------------------------------------
    async def apply(self, spec: ClusterSpec) -> None:
        await self.runtime.apply(spec)

    async def terminate(self, cluster_id: str) -> None:
        await self.runtime.terminate(cluster_id)

    async def restore(self, spec: ClusterSpec | None, cluster_id: str) -> bool:
        """Best effort: put the runtime back after a commit that did not happen (`spec`
        None: remove the cluster). True when it is back; else the reaper finds the
        difference and repairs it."""
        try:
            if spec is None:
                await self.runtime.terminate(cluster_id)
            else:
                await self.runtime.apply(spec)
        except Exception:
            log.exception("could not put cluster %s back; the reaper will reconcile it", cluster_id)
            return False
        return True

    def track(self, cluster_id: str) -> None:
        if self.tracker is not None:
            self.tracker.track(cluster_id)

    def untrack(self, cluster_id: str) -> None:
        if self.tracker is not None:
            self.tracker.untrack(cluster_id)

    # -- writes ----------------------------------------------------------------
    def event(
        self, c: Cluster, kind: str, message: str, at: int, replica: str | None = None
    ) -> Event:
        return self.store.add_event(c.account_id, c.id, at, kind, message, replica)

    def on_loop(self, fn: Callable[[], T]) -> T:
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

    async def commit(
        self, body: Callable[[], T], undo: Undo | None = None, undone: str = "nothing was changed"
    ) -> T:
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
                    f"disk failed); {undone}; try again"
                ) from exc
            raise StoreUnavailableError(
                "the database cannot be written now, and the runtime could not be put back "
                "yet; no money moved, and the backend restores the cluster to its last "
                "stored state"
            ) from exc
        except BaseException:
            if undo is not None:
                await undo()
            raise
