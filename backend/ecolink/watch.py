"""Per-client outgoing queue for the watch feed.

Two kinds of frame: *state* frames carry a key (a cluster, the account, the summaries,
a cluster's replicas) and only the newest per key matters, so a newer one replaces a
queued older one (coalescing); *event* frames are never coalesced or dropped. The
queue is bounded: at most one state frame per key, and at most `max_events` event
frames; a client that falls further behind than that is disconnected (it reconnects
and gets a fresh snapshot) rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import OrderedDict


class ClientQueue:
    def __init__(self, max_events: int = 10_000) -> None:
        self.max_events = max_events
        self._frames: OrderedDict[str, str] = OrderedDict()
        self._events = 0
        self._seq = itertools.count()
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False
        self.coalesced = 0  # state frames replaced before they were sent

    def __len__(self) -> int:
        return len(self._frames)

    def put_state(self, key: str, frame: str) -> None:
        """Queue the newest state for `key`, replacing a queued older one in place."""
        if self.closed:
            return
        k = "s:" + key
        if k in self._frames:
            self.coalesced += 1
        self._frames[k] = frame
        self._ready.set()

    def put_event(self, frame: str) -> None:
        if self.closed:
            return
        if self._events >= self.max_events:
            self.overflowed = True
            self._ready.set()
            return
        self._frames[f"e:{next(self._seq)}"] = frame
        self._events += 1
        self._ready.set()

    def drain(self) -> list[str]:
        out = list(self._frames.values())
        self._frames.clear()
        self._events = 0
        self._ready.clear()
        return out

    async def get_batch(self) -> list[str]:
        """Wait until something is queued, then take everything queued, in order."""
        while not self._frames and not self.overflowed and not self.closed:
            await self._ready.wait()
            if not self._frames:
                self._ready.clear()
        return self.drain()

    def close(self) -> None:
        self.closed = True
        self._ready.set()
