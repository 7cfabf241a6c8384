"""An expired cluster whose replicas still drain (the runtime's terminate returned
once SIGTERM was sent) stays `terminating`, holding no lock of its account, and is
recorded `terminated` once the runtime reports its replicas gone; charges stop at
`expires_at` either way."""

from __future__ import annotations

import asyncio

from ecolink.runtime.base import ReplicaState
from ecolink.service import LaunchRequest
from support.service_harness import MemoryRuntime, make_service, new_account

MH = 1_000_000


class DrainingRuntime(MemoryRuntime):
    """Terminate sends SIGTERM and returns: the replicas are listed, not ready and
    terminating, until the test lets them go (`drained`)."""

    async def terminate(self, cluster_id: str) -> None:
        self._check()
        self.calls.append(("terminate", cluster_id))
        self.specs.pop(cluster_id, None)
        self.states[cluster_id] = [
            ReplicaState(
                name=s.name,
                index=s.index,
                phase="Running",
                ready=False,
                reason="Terminating",
                node=s.node,
            )
            for s in self.states.get(cluster_id, [])
        ]

    def drained(self, cluster_id: str) -> None:
        self.states.pop(cluster_id, None)
        assert self.listener is not None
        self.listener.replicas_changed(cluster_id, [])


def _req(name: str, hours: int = 1) -> LaunchRequest:
    return LaunchRequest(
        name=name,
        region="us-east",
        gpu_type="H100-80GB",
        gpu_count=1,
        replicas=2,
        image="x",
        duration_mh=hours * MH,
    )


def test_an_expired_cluster_is_terminated_once_its_replicas_are_gone() -> None:
    async def main() -> None:
        runtime = DrainingRuntime()
        service, runtime, clock, store = make_service(runtime=runtime)
        acct = new_account(service, "alice", 10_000)
        await service.start(background=False)
        c = await service.launch(acct, _req("short"))
        clock.advance(3605)
        assert await service.expire_due() == 1
        fresh = store.cluster(c.id)
        assert fresh is not None and fresh.status == "terminating"
        assert fresh.spent_total == fresh.hold_total  # charged up to expires_at
        # Another reaper round while they drain changes nothing.
        await service.tick()
        fresh = store.cluster(c.id)
        assert fresh is not None and fresh.status == "terminating"
        # The account's other actions do not wait for the drain.
        other = await asyncio.wait_for(service.launch(acct, _req("other")), 2)
        assert other.status in ("pending", "running")
        runtime.drained(c.id)
        await service.tick()
        fresh = store.cluster(c.id)
        assert fresh is not None and fresh.status == "terminated"
        assert fresh.terminated_at is not None
        assert fresh.spent_total == fresh.hold_total
        assert store.audit() == []

    asyncio.run(main())
