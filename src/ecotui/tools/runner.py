"""Run one command on many replicas at once over the exec WebSocket.

Every replica gets its own exec; output is collected (bounded per replica) with
the exit code and the time it took. A replica that outlives the timeout has its
exec closed, which ends the command there, and is reported as timed out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from ecocore.wire import ClusterOut
from ecotui.client.exec import STDOUT, open_exec
from ecotui.client.rest import ApiRefusal, BackendUnreachable, EcoClient
from ecotui.tools.fold import ReplicaOutcome, sort_names

MAX_OUTPUT = 4 << 20  # per replica and stream
MAX_PARALLEL = 64


def ready_replicas(cluster: ClusterOut) -> list[str]:
    """The names of the cluster's ready replicas, in natural order."""
    return sort_names(s.name for s in cluster.replica_states if s.ready)


def all_replicas(cluster: ClusterOut) -> list[str]:
    return sort_names(s.name for s in cluster.replica_states)


async def run_one(
    client: EcoClient,
    cluster: str,
    replica: str,
    command: Sequence[str],
    *,
    timeout: float | None = None,
    max_bytes: int = MAX_OUTPUT,
) -> ReplicaOutcome:
    start = time.monotonic()
    out, err = bytearray(), bytearray()
    try:
        conn = await open_exec(client, cluster, replica, command)
    except (ApiRefusal, BackendUnreachable) as exc:
        return ReplicaOutcome(
            replica, error=str(exc) or type(exc).__name__, duration=time.monotonic() - start
        )

    async def collect() -> None:
        async for channel, payload in conn.frames():
            buf = out if channel == STDOUT else err
            if len(buf) < max_bytes:
                buf.extend(payload[: max_bytes - len(buf)])

    timed_out = False
    try:
        await asyncio.wait_for(collect(), timeout)
    except TimeoutError:
        timed_out = True
    finally:
        await conn.close()  # closing the exec ends the command in the replica
    took = time.monotonic() - start
    if timed_out:
        return ReplicaOutcome(
            replica, bytes(out), bytes(err), None, f"timed out after {timeout:g} s", True, took
        )
    st = conn.status
    if st is None:
        return ReplicaOutcome(
            replica,
            bytes(out),
            bytes(err),
            None,
            "the connection ended without an exit status",
            duration=took,
        )
    if st.success:
        return ReplicaOutcome(replica, bytes(out), bytes(err), 0, duration=took)
    if st.exit_code is None:
        return ReplicaOutcome(
            replica,
            bytes(out),
            bytes(err),
            None,
            st.message or st.reason or "failed",
            duration=took,
        )
    return ReplicaOutcome(replica, bytes(out), bytes(err), st.exit_code, duration=took)


async def run_everywhere(
    client: EcoClient,
    cluster: str,
    replicas: Sequence[str],
    command: Sequence[str],
    *,
    timeout: float | None = None,
    parallel: int = MAX_PARALLEL,
) -> list[ReplicaOutcome]:
    """Run `command` on every replica in `replicas` at once (at most `parallel`
    execs open together); one outcome per replica, in natural order."""
    gate = asyncio.Semaphore(max(1, parallel))

    async def one(name: str) -> ReplicaOutcome:
        async with gate:
            return await run_one(client, cluster, name, command, timeout=timeout)

    results = await asyncio.gather(*(one(r) for r in replicas))
    order = {n: i for i, n in enumerate(sort_names(replicas))}
    return sorted(results, key=lambda o: order.get(o.name, 0))
