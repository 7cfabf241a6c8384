"""The watch hub on its own (memory runtime, fake clock): rendering once per change,
coalescing per client, account isolation, cluster_removed after the 7 days a
terminated cluster stays listed, and focus limited to the client's own clusters."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from ecolink.api.context import AppContext
from ecolink.api.watch import WatchHub
from ecolink.service import LaunchRequest
from support.service_harness import make_service, new_account

MH = 1_000_000


def _frames(client: object) -> list[dict[str, object]]:
    return [json.loads(f) for f in client.queue.drain()]  # type: ignore[attr-defined]


def test_hub_coalesces_isolates_and_announces_removal(tmp_path: Path) -> None:
    async def main() -> None:
        service, runtime, clock, store = make_service()
        ctx = AppContext(
            service=service,
            store=store,
            runtime=runtime,
            clock=clock,
            state_dir=tmp_path,
            catalog=service.catalog,
        )
        hub = WatchHub(ctx)
        service.observers.append(hub)
        alice = new_account(service, "alice", 1000)
        bob = new_account(service, "bob", 1000)
        await service.start(background=False)
        a = hub.connect(alice)
        b = hub.connect(bob)
        snap = json.loads(await hub.snapshot(a))
        assert snap["type"] == "snapshot" and snap["clusters"] == []
        c = await service.launch(
            alice,
            LaunchRequest(
                name="x",
                region="us-east",
                gpu_type="L40S",
                gpu_count=1,
                replicas=2,
                image="img",
                duration_mh=MH,
            ),
        )
        for n in range(5):  # many changes before the flush: one frame for the cluster
            await service.scale(alice, "x", 2 + n % 2 + 1)
        await hub._flush()
        fa = _frames(a)
        clusters = [f for f in fa if f["type"] == "cluster"]
        assert len(clusters) == 1
        assert clusters[0]["cluster"]["replicas"] == 3  # type: ignore[index]
        assert [f["event"]["kind"] for f in fa if f["type"] == "event"] == (  # type: ignore[index]
            ["launched"] + ["scaled"] * 5
        )
        assert any(f["type"] == "account" for f in fa)
        assert _frames(b) == []  # nothing of alice's reaches bob
        # Focus on bob's cluster id from alice's client is ignored.
        bc = await service.launch(
            bob,
            LaunchRequest(
                name="y",
                region="us-east",
                gpu_type="L40S",
                gpu_count=1,
                replicas=2,
                image="img",
                duration_mh=MH,
            ),
        )
        await hub.set_focus(a, [bc.id, "x"])
        assert a.focus == {c.id}
        await hub.replicas_round()
        reps = [f for f in _frames(a) if f["type"] == "replicas"]
        assert [r["cluster_id"] for r in reps] == [c.id]
        # A terminated cluster stays listed 7 days, then cluster_removed goes out.
        await service.terminate(alice, "x")
        await hub._flush()
        _frames(a)
        await hub.summaries_round()
        assert not any(f["type"] == "cluster_removed" for f in _frames(a))
        clock.advance(7 * 24 * 3600 + 1)
        await hub.summaries_round()
        fa = _frames(a)
        assert {"type": "cluster_removed", "id": c.id} in fa
        summaries = [f for f in fa if f["type"] == "summaries"]
        assert summaries and summaries[-1]["clusters"] == {}
        hub.disconnect(a)
        hub.disconnect(b)
        assert hub.client_count() == 0

    asyncio.run(main())


def test_a_reused_snapshot_comes_with_what_changed_since(tmp_path: Path) -> None:
    async def main() -> None:
        service, runtime, clock, store = make_service()
        ctx = AppContext(
            service=service,
            store=store,
            runtime=runtime,
            clock=clock,
            state_dir=tmp_path,
            catalog=service.catalog,
        )
        hub = WatchHub(ctx)
        service.observers.append(hub)
        alice = new_account(service, "alice", 1000)
        await service.start(background=False)
        first = await service.launch(
            alice,
            LaunchRequest(
                name="a",
                region="us-east",
                gpu_type="L40S",
                gpu_count=1,
                replicas=2,
                image="img",
                duration_mh=MH,
            ),
        )
        c1 = hub.connect(alice)
        s1 = await hub.snapshot(c1)
        later = await service.launch(
            alice,
            LaunchRequest(
                name="b",
                region="us-east",
                gpu_type="L40S",
                gpu_count=1,
                replicas=2,
                image="img",
                duration_mh=MH,
            ),
        )
        c2 = hub.connect(alice)
        c2.queue.drain()
        s2 = await hub.snapshot(c2)
        assert s2 == s1  # the same rendering, reused
        ids = [c["id"] for c in json.loads(s2)["clusters"]]
        assert ids == [first.id]
        queued = _frames(c2)
        assert any(
            f["type"] == "cluster" and f["cluster"]["id"] == later.id  # type: ignore[index]
            for f in queued
        )
        assert any(f["type"] == "account" for f in queued)
        assert c2.known == {first.id, later.id}
        # Too old: rendered afresh, with both clusters.
        hub._snapshots[alice] = (*hub._snapshots[alice][:2], 0.0)
        c3 = hub.connect(alice)
        assert len(json.loads(await hub.snapshot(c3))["clusters"]) == 2

    asyncio.run(main())
