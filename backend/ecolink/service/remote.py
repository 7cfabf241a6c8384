"""Changes other instances commit to a shared database, told to this instance's
observers (its `/watch` clients) as if made here.

Each commit on Postgres is announced by NOTIFY with what it changed (see
`ecolink.store.database`); the store's watch thread hears it and calls `heard`,
which hands it to the event loop. Events are read back by id (off the loop)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine

from ecocore.status import ACCRUING
from ecolink.service.changes import ChangeBus
from ecolink.store import Store, StoreError

log = logging.getLogger(__name__)


class RemoteChanges:
    def __init__(
        self,
        store: Store,
        bus: ChangeBus,
        track: Callable[[str], None],
        untrack: Callable[[str], None],
    ) -> None:
        self.store = store
        self.bus = bus
        # This instance's telemetry follows the clusters that run, whoever launched
        # or stopped them.
        self.track = track
        self.untrack = untrack
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self) -> None:
        """Start hearing other instances' commits (only where several can share it)."""
        if self.store.dialect != "postgresql":
            return
        self._loop = asyncio.get_running_loop()
        self.store.on_remote_change(self.heard)

    def heard(self, items: list[str]) -> None:
        """The store's watch thread: another instance's commit changed `items`."""
        loop = self._loop
        if loop is None or loop.is_closed() or not items:
            return
        loop.call_soon_threadsafe(self._publish, items)

    def _publish(self, items: list[str]) -> None:
        clusters: list[tuple[str, str]] = []
        accounts: list[str] = []
        event_ids: list[int] = []
        for item in items:
            kind, _, rest = item.partition(":")
            if kind == "c" and rest.count(":") == 1:
                account_id, cluster_id = rest.split(":")
                clusters.append((account_id, cluster_id))
            elif kind == "a" and rest:
                accounts.append(rest)
            elif kind == "e" and rest.isdigit():
                event_ids.append(int(rest))
        self.bus.publish_ids(clusters, accounts)
        if clusters:
            self._spawn(self._follow([cid for _, cid in clusters]))
        if event_ids:
            self._spawn(self._events(event_ids))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow(self, ids: list[str]) -> None:
        store = self.store
        try:
            found = await store.run_read(lambda: [store.cluster(cid) for cid in ids])
        except StoreError as exc:
            log.warning("could not read another instance's clusters: %s", exc)
            return
        for c in found:
            if c is not None:
                (self.track if c.status in ACCRUING else self.untrack)(c.id)

    async def _events(self, ids: list[int]) -> None:
        try:
            events = await self.store.run_read(lambda: self.store.events_by_id(ids))
        except StoreError as exc:
            log.warning("could not read another instance's events: %s", exc)
            return
        self.bus.publish_ids(events=events)
