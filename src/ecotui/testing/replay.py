"""A replayed watch feed and REST answers from a generated fleet, standing in for
the network.

`ReplayFrameSource` is a frame source with the watch client's interface
(`frames()`, `focus()`, `close()`) that yields frames a test pushes, and
answers focus with replicas frames like the backend does. A frame may be pushed
as the JSON object the backend would send: it is parsed as the watch client
parses the socket's messages, so it must be one of api.md's frames. `fleet_transport`
answers the REST routes the dashboard reads from the same fleet (an
`httpx.MockTransport` for `EcoClient(transport=...)`).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from ecocore.wire import WATCH_FRAME, WatchFrame
from ecotui.client.watch import connection_frame
from ecotui.testing.common import GPU_TYPES, REGIONS, usd
from ecotui.testing.fleet import GeneratedFleet

# A frame as a test gives it: parsed already, or the JSON object the backend sends.
FrameIn = WatchFrame | dict[str, Any]


def as_frame(frame: FrameIn) -> WatchFrame:
    """The frame model of a frame given as a JSON object (pydantic's ValidationError
    when it is none of api.md's frames)."""
    return WATCH_FRAME.validate_python(frame) if isinstance(frame, dict) else frame


class ReplayFrameSource:
    """A frame source fed by the test or benchmark (stands in for the /watch socket)."""

    def __init__(
        self,
        frames: Iterable[FrameIn] = (),
        *,
        on_focus: Callable[[list[str]], Iterable[FrameIn]] | None = None,
        connected: bool = True,
    ) -> None:
        self._queue: asyncio.Queue[FrameIn | None] = asyncio.Queue()
        self._initial = list(frames)
        self._on_focus = on_focus
        self._connected = connected
        self.focused: list[str] = []
        self.focus_calls = 0
        self._closed = False

    def push(self, *frames: FrameIn) -> None:
        for f in frames:
            self._queue.put_nowait(f)

    def drop(
        self,
        *,
        retry_in: float = 4.0,
        attempt: int = 1,
        now: datetime | None = None,
        error: str = "connection lost",
    ) -> None:
        """The connection went away: what the watch client reports then."""
        when = (now or datetime.now(UTC)) + timedelta(seconds=retry_in)
        self.push(
            connection_frame("reconnecting", attempt=attempt, next_retry_at=when, error=error)
        )

    def restore(self, snapshot: FrameIn) -> None:
        self.push(connection_frame("connected"), snapshot)

    async def focus(self, cluster_ids: Iterable[str]) -> None:
        self.focused = list(cluster_ids)
        self.focus_calls += 1
        if self._on_focus is not None:
            for f in self._on_focus(self.focused):
                self._queue.put_nowait(f)

    async def close(self) -> None:
        self._closed = True
        self._queue.put_nowait(None)

    async def frames(self) -> AsyncIterator[WatchFrame]:
        if self._connected:
            yield connection_frame("connected")
        for f in self._initial:
            yield as_frame(f)
        while not self._closed:
            item = await self._queue.get()
            if item is None:
                break
            yield as_frame(item)


class _FollowStream(httpx.AsyncByteStream):
    """The tail, then an open stream until the reader goes away."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        await asyncio.Event().wait()

    async def aclose(self) -> None:
        return None


_CLUSTER_ROUTE = re.compile(r"^/gpu-clusters/([^/]+)(?:/(.*))?$")


def fleet_transport(fleet: GeneratedFleet) -> httpx.MockTransport:
    """REST answers from the generated fleet, for `EcoClient(transport=...)`."""

    def answer(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        q = request.url.params
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok", "version": "demo"})
        if path == "/account":
            return httpx.Response(200, json=fleet.account)
        if path == "/catalog":
            return httpx.Response(
                200,
                json={
                    "regions": [
                        {
                            "name": region,
                            "gpu_budget": 256,
                            "gpu_types": [
                                {
                                    "name": name,
                                    "rate_per_gpu_hour": usd(rate),
                                    "gpu_counts": [1, 2, 4, 8],
                                }
                                for name, rate, _mem, _power in GPU_TYPES
                            ],
                        }
                        for region in REGIONS
                    ]
                },
            )
        if path == "/filesystems":
            return httpx.Response(
                200,
                json={"filesystems": [{"name": "models", "description": "shared model weights"}]},
            )
        if path == "/account/ledger":
            cid = q.get("cluster_id") or None
            if q.get("format") == "csv":
                return httpx.Response(
                    200, text=fleet.ledger_csv(cid), headers={"content-type": "text/csv"}
                )
            before = int(q["before"]) if q.get("before") else None
            return httpx.Response(
                200,
                json={
                    "entries": fleet.ledger(
                        cluster_id=cid, limit=int(q.get("limit") or 100), before=before
                    )
                },
            )
        if path == "/gpu-clusters":
            return httpx.Response(200, json={"clusters": list(fleet.clusters.values())})
        if path == "/gpus":
            return httpx.Response(
                200,
                json=fleet.fleet_gpus_answer(
                    unhealthy=q.get("unhealthy") in ("1", "true"),
                    brief=q.get("brief") in ("1", "true"),
                    since=q.get("since"),
                ),
            )
        m = _CLUSTER_ROUTE.match(path)
        if m:
            ref, rest = m.group(1), m.group(2) or ""
            c = fleet.clusters.get(ref) or next(
                (x for x in fleet.clusters.values() if x["name"] == ref), None
            )
            if c is None:
                return httpx.Response(
                    404, json={"error": {"code": "not_found", "message": f"no cluster {ref}"}}
                )
            cid = c["id"]
            if request.method != "GET":
                return httpx.Response(
                    409, json={"error": {"code": "conflict", "message": "this feed is read-only"}}
                )
            if rest == "":
                return httpx.Response(200, json=c)
            if rest == "replicas":
                return httpx.Response(200, json={"replicas": fleet.replicas_list(cid, 0.0)})
            if rest == "metrics":
                return httpx.Response(200, json=fleet.metrics(cid))
            if rest == "events":
                return httpx.Response(200, json={"events": fleet.events(cid)})
            if rest == "sessions":
                return httpx.Response(200, json={"sessions": []})
            lm = re.match(r"^replicas/([^/]+)/logs$", rest)
            if lm:
                text = fleet.logs(cid, lm.group(1), previous=q.get("previous") in ("1", "true"))
                if q.get("follow") in ("1", "true"):
                    # A follow stays open after the tail, as the backend's does.
                    return httpx.Response(
                        200,
                        stream=_FollowStream(text.encode()),
                        headers={"content-type": "text/plain"},
                    )
                return httpx.Response(200, text=text, headers={"content-type": "text/plain"})
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})

    return httpx.MockTransport(answer)


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))
