"""The `/watch` WebSocket feed and the hub that fans changes out to its clients.

Frames (api.md): a snapshot first; then `cluster` deltas (within a second of a change,
coalesced per cluster), `cluster_removed`, `account`, `event` (never coalesced or
dropped), `summaries` every 5 seconds, and `replicas` every second for the clusters a
client focused. A frame is rendered once per change and shared by every client of
that account; nothing of one account ever reaches another account's clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter
from starlette.websockets import WebSocket, WebSocketDisconnect

from ecolink.api.auth import require_ws_account
from ecolink.api.context import AppContext, get_ctx
from ecolink.api.render import (
    account_json,
    cluster_json_text,
    event_json,
    gpu_summary,
    replicas_json,
    traffic_json,
)
from ecolink.api.render_health import brief_health
from ecolink.errors import Unauthenticated
from ecolink.service import LISTED_AFTER_TERMINATION_US
from ecolink.store import Account, Cluster, Event, StoreUnavailable
from ecolink.watch import ClientQueue

log = logging.getLogger(__name__)
router = APIRouter()

MAX_FOCUS = 100
# How long a rendered snapshot may be reused, and for how many changes since.
SNAPSHOT_MAX_AGE_S = 5.0
SNAPSHOT_MAX_CHANGES = 200


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class WatchClient:
    def __init__(self, account_id: str, max_events: int) -> None:
        self.account_id = account_id
        self.queue = ClientQueue(max_events=max_events)
        self.focus: set[str] = set()
        self.known: set[str] = set()


class WatchHub:
    """Observer of the service; renders changes once and queues them per client."""

    def __init__(
        self,
        ctx: AppContext,
        *,
        summary_interval_s: float = 5.0,
        replicas_interval_s: float = 1.0,
        flush_delay_s: float = 0.05,
        max_events: int = 10_000,
    ) -> None:
        self.ctx = ctx
        self.summary_interval_s = summary_interval_s
        self.replicas_interval_s = replicas_interval_s
        self.flush_delay_s = flush_delay_s
        self.max_events = max_events
        self.clients: defaultdict[str, set[WatchClient]] = defaultdict(set)
        self._dirty: defaultdict[str, set[str]] = defaultdict(set)
        self._dirty_accounts: set[str] = set()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._snapshots: dict[str, tuple[frozenset[str], str, float]] = {}
        self._changed_since: dict[str, set[str]] = {}
        self._account_changed_since: set[str] = set()

    # -- lifecycle --------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._flush_loop(), name="watch-flush"),
            asyncio.create_task(
                self._every(self.summary_interval_s, self.summaries_round, "summaries"),
                name="watch-summaries",
            ),
            asyncio.create_task(
                self._every(self.replicas_interval_s, self.replicas_round, "replicas"),
                name="watch-replicas",
            ),
        ]

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for clients in self.clients.values():
            for c in clients:
                c.queue.close()

    def connect(self, account_id: str) -> WatchClient:
        client = WatchClient(account_id, self.max_events)
        self.clients[account_id].add(client)
        return client

    def disconnect(self, client: WatchClient) -> None:
        client.queue.close()
        clients = self.clients.get(client.account_id)
        if clients is not None:
            clients.discard(client)
            if not clients:
                del self.clients[client.account_id]

    def client_count(self) -> int:
        return sum(len(v) for v in self.clients.values())

    # -- Observer -----------------------------------------------------------
    def cluster_changed(self, account_id: str, cluster_id: str) -> None:
        if account_id in self._snapshots:
            since = self._changed_since.setdefault(account_id, set())
            since.add(cluster_id)
            if len(since) > SNAPSHOT_MAX_CHANGES:
                self._snapshots.pop(account_id, None)
        if account_id in self.clients:
            self._dirty[account_id].add(cluster_id)
            self._wake.set()

    def account_changed(self, account_id: str) -> None:
        if account_id in self._snapshots:
            self._account_changed_since.add(account_id)
        if account_id in self.clients:
            self._dirty_accounts.add(account_id)
            self._wake.set()

    def event_added(self, event: Event) -> None:
        clients = self.clients.get(event.account_id)
        if not clients:
            return
        frame = _dumps(
            {"type": "event", "cluster_id": event.cluster_id, "event": event_json(event)}
        )
        for c in clients:
            c.queue.put_event(frame)

    # -- rendering ----------------------------------------------------------
    # The store is read in one of its reader threads (`Store.run_read`), one hop per
    # snapshot, flush or round; frames are rendered here, on the event loop.
    async def snapshot(self, client: WatchClient) -> str:
        """The first frame. Clients of one account that connect close together share
        one rendering (a snapshot of a thousand clusters is a megabyte): a cached
        snapshot up to SNAPSHOT_MAX_AGE_S old is sent with fresh frames for whatever
        changed since it was made, queued right behind it."""
        ctx = self.ctx
        streams = ctx.streams
        account_id = client.account_id
        cached = self._snapshots.get(account_id)
        if cached is not None and time.monotonic() - cached[2] <= SNAPSHOT_MAX_AGE_S:
            ids, text, _ = cached
            changed = list(self._changed_since.get(account_id, ()))
            account_changed = account_id in self._account_changed_since

            def read_changes() -> tuple[list[Cluster | None], Account | None]:
                return (
                    [streams.owned_cluster(account_id, cid) for cid in changed],
                    streams.account_or_none(account_id) if account_changed else None,
                )

            found, acct = await ctx.store.run_read(read_changes)
            client.known = set(ids)
            for c in found:
                if c is not None:
                    client.queue.put_state(
                        "c:" + c.id,
                        '{"type":"cluster","cluster":' + cluster_json_text(ctx, c) + "}",
                    )
                    client.known.add(c.id)
            if acct is not None:
                client.queue.put_state(
                    "account", _dumps({"type": "account", "account": account_json(acct)})
                )
            return text
        service = ctx.service
        clusters, account = await ctx.store.run_read(
            lambda: (service.list_clusters(account_id), service.account(account_id))
        )
        ids = frozenset(c.id for c in clusters)
        client.known = set(ids)
        text = (
            '{"type":"snapshot","clusters":['
            + ",".join(cluster_json_text(ctx, c) for c in clusters)
            + '],"account":'
            + _dumps(account_json(account))
            + "}"
        )
        self._snapshots[account_id] = (ids, text, time.monotonic())
        self._changed_since[account_id] = set()
        self._account_changed_since.discard(account_id)
        return text

    async def _flush(self) -> None:
        ctx = self.ctx
        streams = ctx.streams
        dirty, self._dirty = self._dirty, defaultdict(set)
        accounts, self._dirty_accounts = self._dirty_accounts, set()
        wanted = [
            (account_id, cid)
            for account_id, cids in dirty.items()
            if self.clients.get(account_id)
            for cid in cids
        ]
        wanted_accounts = [a for a in accounts if self.clients.get(a)]
        if not wanted and not wanted_accounts:
            return

        def read() -> tuple[list[Cluster | None], list[Account | None]]:
            return (
                [streams.owned_cluster(a, cid) for a, cid in wanted],
                [streams.account_or_none(a) for a in wanted_accounts],
            )

        found, accts = await ctx.store.run_read(read)
        now = ctx.service.now()
        horizon = now - LISTED_AFTER_TERMINATION_US
        for (account_id, cid), c in zip(wanted, found, strict=True):
            clients = self.clients.get(account_id)
            if not clients or c is None:
                continue
            if c.status == "terminated" and (c.terminated_at or 0) < horizon:
                continue
            frame = '{"type":"cluster","cluster":' + cluster_json_text(ctx, c) + "}"
            for cl in clients:
                cl.queue.put_state("c:" + cid, frame)
                cl.known.add(cid)
        for account_id, acct in zip(wanted_accounts, accts, strict=True):
            clients = self.clients.get(account_id)
            if not clients or acct is None:
                continue
            frame = _dumps({"type": "account", "account": account_json(acct)})
            for cl in clients:
                cl.queue.put_state("account", frame)

    async def summaries_round(self) -> None:
        ctx = self.ctx
        service = ctx.service
        accounts = list(self.clients)
        if not accounts:
            return
        lists = await ctx.store.run_read(lambda: [service.list_clusters(a) for a in accounts])
        for account_id, clusters in zip(accounts, lists, strict=True):
            clients = self.clients.get(account_id)
            if not clients:
                continue
            ids = {c.id for c in clusters}
            frame = _dumps(
                {
                    "type": "summaries",
                    "clusters": {c.id: gpu_summary(ctx, c) for c in clusters},
                    "traffic": {c.id: traffic_json(ctx, c) for c in clusters},
                }
            )
            for cl in clients:
                for gone in cl.known - ids:
                    cl.queue.put_state("c:" + gone, _dumps({"type": "cluster_removed", "id": gone}))
                cl.known &= ids
                cl.queue.put_state("summaries", frame)

    def _replicas_frame(self, c: Cluster) -> str:
        return _dumps(
            {
                "type": "replicas",
                "cluster_id": c.id,
                "replicas": brief_health(replicas_json(self.ctx, c)),
            }
        )

    async def _clusters_by_id(self, ids: list[str]) -> dict[str, Cluster]:
        streams = self.ctx.streams
        found = await self.ctx.store.run_read(lambda: [streams.cluster_by_id(cid) for cid in ids])
        return {c.id: c for c in found if c is not None}

    async def replicas_round(self) -> None:
        focused = sorted(
            {cid for clients in self.clients.values() for cl in clients for cid in cl.focus}
        )
        if not focused:
            return
        clusters = await self._clusters_by_id(focused)
        cache: dict[str, str] = {}
        for clients in list(self.clients.values()):
            for cl in clients:
                for cid in cl.focus:
                    c = clusters.get(cid)
                    if c is None:
                        continue
                    if cid not in cache:
                        cache[cid] = self._replicas_frame(c)
                    cl.queue.put_state("r:" + cid, cache[cid])

    async def set_focus(self, client: WatchClient, refs: list[str]) -> None:
        streams = self.ctx.streams
        account_id = client.account_id
        wanted = refs[:MAX_FOCUS]
        found = await self.ctx.store.run_read(
            lambda: [streams.find_cluster(account_id, ref) for ref in wanted]
        )
        focused = {c.id: c for c in found if c is not None}
        client.focus = set(focused)
        for cid, c in focused.items():
            client.queue.put_state("r:" + cid, self._replicas_frame(c))

    # -- loops --------------------------------------------------------------
    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # A short pause lets a burst of changes coalesce into one frame each.
            await asyncio.sleep(self.flush_delay_s)
            try:
                await self._flush()
            except Exception:
                log.exception("watch flush failed")

    async def _every(
        self, interval_s: float, round_: Callable[[], Awaitable[None]], what: str
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await round_()
            except Exception:
                log.exception("watch %s failed", what)


async def _sender(ws: WebSocket, client: WatchClient) -> None:
    while True:
        batch = await client.queue.get_batch()
        for frame in batch:
            await ws.send_text(frame)
        if client.queue.overflowed:
            # Too far behind to deliver every event: make it resync from a snapshot.
            await ws.close(code=1013, reason="too slow; reconnect for a fresh snapshot")
            return
        if client.queue.closed:
            await ws.close(code=1001, reason="server shutting down")
            return


async def _receiver(ws: WebSocket, hub: WatchHub, client: WatchClient) -> None:
    while True:
        msg = await ws.receive()
        if msg["type"] == "websocket.disconnect":
            return
        text = msg.get("text")
        if text is None and msg.get("bytes") is not None:
            text = msg["bytes"].decode("utf-8", "replace")
        if not text or len(text) > 64 * 1024:
            continue
        try:
            data = json.loads(text)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("type") == "focus":
            refs = data.get("clusters")
            if isinstance(refs, list):
                try:
                    await hub.set_focus(client, [r for r in refs if isinstance(r, str)])
                except StoreUnavailable:
                    log.warning("watch focus not changed: the database cannot be read now")


@router.websocket("/watch")
async def watch(websocket: WebSocket) -> None:
    try:
        account = await require_ws_account(websocket)
    except Unauthenticated:
        return
    hub = get_ctx(websocket).hub
    await websocket.accept()
    client = hub.connect(account.id)
    tasks: list[asyncio.Task[None]] = []
    try:
        try:
            snapshot = await hub.snapshot(client)
        except StoreUnavailable:
            await websocket.close(code=1013, reason="the database cannot be read now; try again")
            return
        await websocket.send_text(snapshot)
        tasks = [
            asyncio.create_task(_sender(websocket, client)),
            asyncio.create_task(_receiver(websocket, hub, client)),
        ]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            exc = t.exception()
            if exc is not None and not isinstance(exc, WebSocketDisconnect | RuntimeError):
                log.debug("watch client ended: %r", exc)
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        hub.disconnect(client)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
