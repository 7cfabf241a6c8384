"""This instance's presence in the database it serves from (`store.instances`).

At start it registers, and is refused if a live instance on the same database serves
a different catalog: two instances that price or budget differently must not answer
for the same accounts. While it runs it is seen again every few seconds, with the
address other instances reach it at (to forward a kept session's attach); a clean
stop removes it, and one not seen for `ALIVE_US` counts as gone."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging

from ecocore.clock import Clock
from ecocore.version import VERSION
from ecolink.catalog import Catalog
from ecolink.store import Store, StoreError, to_us
from ecolink.store.instances import ALIVE_US, HEARTBEAT_S

log = logging.getLogger(__name__)


class PresenceRefused(Exception):
    """Another live instance serves a different catalog from the same database."""


def catalog_fingerprint(catalog: Catalog) -> str:
    """The same for two catalogs that price and budget alike, however written."""
    return hashlib.sha256(repr(catalog).encode()).hexdigest()[:16]


class Presence:
    def __init__(self, store: Store, clock: Clock, catalog: Catalog) -> None:
        self.store = store
        self.clock = clock
        self.id = store.instance_id
        self.catalog = catalog_fingerprint(catalog)
        self.address: str | None = None
        self._task: asyncio.Task[None] | None = None
        # Since when this instance has been seen without a miss (None while its
        # heartbeats fail): only after `ALIVE_US` of that can another instance's
        # missing heartbeats say that it is gone, not that the database was away.
        self._steady_since: int | None = None

    def now(self) -> int:
        return to_us(self.clock.now())

    def register(self) -> None:
        """Record this instance (before serving); `PresenceRefused` says who differs."""
        now = self.now()
        with self.store.tx():
            differ = self.store.register_instance(self.id, self.catalog, VERSION, now)
        if differ:
            names = ", ".join(
                f"{i.id} (at {i.address or 'an unknown address'}, ecolink {i.version})"
                for i in differ
            )
            raise PresenceRefused(
                f"another instance on this database serves a different catalog: {names}; "
                f"every instance on one database must serve the same catalog (this one's "
                f"is {self.catalog}, theirs {differ[0].catalog}). Start this one with "
                f"theirs, or stop them first (an instance not seen for "
                f"{ALIVE_US // 1_000_000} s counts as gone)"
            )
        self._steady_since = now

    def steady_since(self) -> int | None:
        """Since when this instance's heartbeats have all been recorded (us)."""
        return self._steady_since

    def start(self, address: str | None = None) -> None:
        self.address = address
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        first = True
        while True:
            if not first:
                await asyncio.sleep(HEARTBEAT_S)
            first = False
            now, address = self.now(), self.address
            try:
                await self.store.run_write(
                    lambda: self.store.instance_seen(self.id, now, address)  # noqa: B023
                )
            except StoreError as exc:
                self._steady_since = None
                log.warning("could not record this instance as seen: %s", exc)
            else:
                if self._steady_since is None:
                    self._steady_since = now
                if self.store.dialect != "postgresql":
                    # One instance per SQLite file: nobody watches for its heartbeat, and
                    # a write every 5 s would only move the caches' generation.
                    return

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(StoreError):
            await self.store.run_write(lambda: self.store.remove_instance(self.id))
