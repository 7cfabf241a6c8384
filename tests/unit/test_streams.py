"""The read and stream use cases (ecolink.streams) over the memory runtime: the
service URL's targets in turn, replica logs refused before anything is streamed and
closed when the reader stops, and what a missing session manager or another
account's cluster is answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ecolink.errors import NotFound
from ecolink.runtime.base import HostPort, ReplicaNotFound, ReplicaState, RuntimeUnavailable
from ecolink.service import LaunchRequest
from ecolink.store import Cluster
from ecolink.streams import ClusterStreams
from support.service_harness import MemoryRuntime, make_service, new_account

MH = 1_000_000


class StreamingRuntime(MemoryRuntime):
    def __init__(self) -> None:
        super().__init__()
        self.unreachable: set[str] = set()
        self.closed: list[str] = []

    def replicas(self, cluster_id: str) -> list[ReplicaState]:
        self._check()  # as a remote runtime whose API server is down
        return super().replicas(cluster_id)

    async def service_target(self, cluster_id: str, replica: str, port: int) -> HostPort:
        if replica in self.unreachable:
            raise ReplicaNotFound(replica)
        index = int(replica.rsplit("-", 1)[1])
        return HostPort("127.0.0.1", port * 10 + index)

    def logs(
        self, cluster_id: str, replica: str, *, tail: int | None, follow: bool, previous: bool
    ) -> AsyncIterator[bytes]:
        async def lines() -> AsyncIterator[bytes]:
            try:
                for n in range(100):
                    yield f"{replica} line {n}\n".encode()
            finally:
                self.closed.append(replica)

        return lines()


async def _setup(replicas: int = 3) -> tuple[ClusterStreams, StreamingRuntime, str, Cluster]:
    runtime = StreamingRuntime()
    service, _, _, store = make_service(runtime=runtime)
    alice = new_account(service, "alice", 1000)
    await service.start(background=False)
    c = await service.launch(
        alice,
        LaunchRequest(
            name="web",
            region="us-east",
            gpu_type="L40S",
            gpu_count=1,
            replicas=replicas,
            image="img",
            duration_mh=MH,
        ),
    )
    return ClusterStreams(service, runtime, store, None), runtime, alice, c


def test_service_targets_take_turns_and_skip_unreachable_replicas() -> None:
    async def main() -> None:
        streams, runtime, alice, c = await _setup()
        with pytest.raises(NotFound):  # no endpoint yet
            await streams.service_targets(alice, "web")
        await streams.service.set_endpoint(alice, "web", 800)
        firsts = [(await streams.service_targets(alice, "web")).targets[0].port for _ in range(4)]
        assert firsts == [8000, 8001, 8002, 8000]
        found = await streams.service_targets(alice, c.id)
        assert found.cluster_id == c.id
        assert [t.port for t in found.targets] == [8001, 8002, 8000]
        runtime.unreachable = {"web-0", "web-2"}
        found = await streams.service_targets(alice, "web")
        assert [t.port for t in found.targets] == [8001]
        runtime.unreachable = {"web-0", "web-1", "web-2"}
        with pytest.raises(RuntimeUnavailable):
            await streams.service_targets(alice, "web")
        runtime.unreachable = set()
        runtime.unavailable = True
        with pytest.raises(RuntimeUnavailable):
            await streams.service_targets(alice, "web")
        bob = new_account(streams.service, "bob", 10)
        runtime.unavailable = False
        with pytest.raises(NotFound):  # another account's cluster
            await streams.service_targets(bob, "web")
        assert streams.owned_cluster(bob, c.id) is None
        assert streams.owned_cluster(alice, c.id) is not None

    asyncio.run(main())


def test_replica_logs_refuse_an_unknown_replica_first_and_close_the_source() -> None:
    async def main() -> None:
        streams, runtime, _, c = await _setup(replicas=2)
        # Refused when asked, not once the answer is already streaming.
        with pytest.raises(ReplicaNotFound):
            streams.replica_logs(c, "web-9", tail=None, follow=False, previous=False)
        body = streams.replica_logs(c, "web-1", tail=None, follow=False, previous=False)
        got = [chunk async for chunk, _ in zip_n(body, 3)]
        assert got == [b"web-1 line 0\n", b"web-1 line 1\n", b"web-1 line 2\n"]
        await body.aclose()  # type: ignore[attr-defined]
        assert runtime.closed == ["web-1"]

    asyncio.run(main())


async def zip_n(source: AsyncIterator[bytes], n: int) -> AsyncIterator[tuple[bytes, int]]:
    i = 0
    async for chunk in source:
        yield chunk, i
        i += 1
        if i == n:
            return


def test_kept_sessions_without_a_manager_are_503() -> None:
    async def main() -> None:
        streams, _, _, c = await _setup(replicas=2)
        with pytest.raises(RuntimeUnavailable):
            await streams.list_sessions(c)
        with pytest.raises(RuntimeUnavailable):
            await streams.create_session(c, "web-0", None, tty=True, width=80, height=24)

    asyncio.run(main())
