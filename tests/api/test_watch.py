"""The /watch feed: snapshot, cluster deltas within a second, events, account frames,
summaries every 5 seconds, focus -> replicas every second, isolation between accounts,
and the per-client queue's coalescing and bound."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
import websockets

from ecocore.wire import parse_frame
from ecolink.watch import ClientQueue

LAUNCH: dict[str, Any] = {
    "name": "w",
    "region": "us-east",
    "gpu_type": "L40S",
    "gpu_count": 1,
    "replicas": 2,
    "image": "python:3.12",
    "estimated_duration_hours": 1,
    "startup_command": "sleep infinity",
}


class Feed:
    """Frames as they come; `next` finds the first not yet taken that matches."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.unread: list[dict[str, Any]] = []

    async def next(self, pred: Any, timeout: float) -> dict[str, Any]:
        for i, frame in enumerate(self.unread):
            if pred(frame):
                return self.unread.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, (
                f"no matching frame in {timeout}s; got {[f['type'] for f in self.frames]}"
            )
            text = await asyncio.wait_for(self.ws.recv(), left)
            parse_frame(text)  # every frame is one of ecocore.wire's watch frames
            frame = json.loads(text)
            self.frames.append(frame)
            if pred(frame):
                return frame
            self.unread.append(frame)


async def _open(server: Any, key: str) -> Any:
    return await websockets.connect(
        server.ws_url("/watch"),
        additional_headers={"Authorization": f"Bearer {key}"},
        max_size=None,
    )


def test_watch_snapshot_deltas_events_focus_and_summaries(shared_ecolink_server: Any) -> None:
    srv = shared_ecolink_server
    key = srv.new_account("w-" + uuid.uuid4().hex[:6], "1000")
    other_key = srv.new_account("o-" + uuid.uuid4().hex[:6], "1000")

    async def main() -> None:
        async with (
            httpx.AsyncClient(base_url=srv.url, headers={"Authorization": f"Bearer {key}"}) as api,
            httpx.AsyncClient(
                base_url=srv.url, headers={"Authorization": f"Bearer {other_key}"}
            ) as other,
        ):
            pre = (await api.post("/gpu-clusters", json={**LAUNCH, "name": "pre"})).json()
            ws = await _open(srv, key)
            feed = Feed(ws)
            try:
                snap = await feed.next(lambda f: True, 5)
                assert snap["type"] == "snapshot"
                assert [c["id"] for c in snap["clusters"]] == [pre["id"]]
                assert snap["account"]["held"] == pre["cost"]["hold"]
                # The other account's cluster never shows up in this feed.
                theirs = (await other.post("/gpu-clusters", json=LAUNCH)).json()
                # Deltas arrive within a second of the change (timed from the answer:
                # how long the runtime takes to start replicas is not the feed's).
                mine = (await api.post("/gpu-clusters", json=LAUNCH)).json()
                t0 = time.monotonic()
                delta = await feed.next(
                    lambda f: f["type"] == "cluster" and f["cluster"]["id"] == mine["id"], 5
                )
                assert time.monotonic() - t0 < 1.0
                assert delta["cluster"]["name"] == "w"
                ev = await feed.next(
                    lambda f: f["type"] == "event" and f["cluster_id"] == mine["id"], 5
                )
                assert ev["event"]["kind"] == "launched"
                acct = await feed.next(lambda f: f["type"] == "account", 5)
                assert acct["account"]["held"] != snap["account"]["held"]
                stopped = (await api.post(f"/gpu-clusters/{mine['id']}/stop")).json()
                assert stopped["status"] == "stopped"
                t1 = time.monotonic()
                await feed.next(
                    lambda f: (
                        f["type"] == "cluster"
                        and f["cluster"]["id"] == mine["id"]
                        and f["cluster"]["status"] == "stopped"
                    ),
                    5,
                )
                assert time.monotonic() - t1 < 1.0
                # Focus: replicas at once, then every second.
                await ws.send(json.dumps({"type": "focus", "clusters": [pre["id"], theirs["id"]]}))
                r1 = await feed.next(lambda f: f["type"] == "replicas", 3)
                assert r1["cluster_id"] == pre["id"]
                assert {r["name"] for r in r1["replicas"]} == {"pre-0", "pre-1"}
                assert all("gpus" in r and "telemetry" in r for r in r1["replicas"])
                # Per second: each GPU's verdict and reason; the readings are on the route.
                frame_gpus = [g for r in r1["replicas"] for g in r["gpus"]]
                assert frame_gpus and all(
                    set(g["health"]) == {"verdict", "reason"} for g in frame_gpus
                )
                routed = (await api.get(f"/gpu-clusters/{pre['id']}/replicas")).json()
                routed_gpus = [g for r in routed["replicas"] for g in r["gpus"]]
                assert all(
                    {"verdict", "reason", "ecc_dbe_volatile", "throttle"} <= set(g["health"])
                    for g in routed_gpus
                )
                t2 = time.monotonic()
                await feed.next(lambda f: f["type"] == "replicas", 3)
                assert time.monotonic() - t2 < 2.0
                summ = await feed.next(lambda f: f["type"] == "summaries", 7)
                assert set(summ["clusters"]) == {pre["id"], mine["id"]}
                for s in summ["clusters"].values():
                    assert {"gpus", "mean_utilization", "idle_gpus", "telemetry"} <= set(s)
                text = json.dumps(feed.frames)
                assert theirs["id"] not in text
            finally:
                await ws.close()

    asyncio.run(main())


def test_events_are_never_coalesced(shared_ecolink_server: Any) -> None:
    srv = shared_ecolink_server
    key = srv.new_account("e-" + uuid.uuid4().hex[:6], "1000")

    async def main() -> None:
        async with httpx.AsyncClient(
            base_url=srv.url, headers={"Authorization": f"Bearer {key}"}
        ) as api:
            c = (await api.post("/gpu-clusters", json=LAUNCH)).json()
            ws = await _open(srv, key)
            feed = Feed(ws)
            try:
                await feed.next(lambda f: f["type"] == "snapshot", 5)
                for port in range(8000, 8010):
                    r = await api.put(f"/gpu-clusters/{c['id']}/endpoint", json={"port": port})
                    assert r.status_code == 200
                seen: list[str] = []
                while len(seen) < 10:
                    f = await feed.next(
                        lambda f: f["type"] == "event" and f["event"]["kind"] == "endpoint_changed",
                        5,
                    )
                    seen.append(f["event"]["message"])
                assert len(seen) == 10 and "8009" in seen[-1]
            finally:
                await ws.close()

    asyncio.run(main())


def test_client_queue_coalesces_state_and_keeps_every_event() -> None:
    q = ClientQueue(max_events=100)
    for i in range(1000):
        q.put_state("c:1", f"state {i}")
    for i in range(50):
        q.put_event(f"event {i}")
    q.put_state("c:2", "other")
    assert len(q) == 52
    frames = q.drain()
    assert frames[0] == "state 999"
    assert frames[1:51] == [f"event {i}" for i in range(50)]
    assert frames[-1] == "other" and q.coalesced == 999 and not q.overflowed


def test_client_queue_is_bounded_and_flags_a_client_too_far_behind() -> None:
    q = ClientQueue(max_events=10)
    for i in range(11):
        q.put_event(str(i))
    assert len(q) == 10 and q.overflowed

    async def batch() -> list[str]:
        return await asyncio.wait_for(q.get_batch(), 1)

    assert asyncio.run(batch()) == [str(i) for i in range(10)]
