"""The local runtime's records: a cluster, its replicas, and the GPUs they share.

Plain state, changed on the event loop only; the supervisor (`supervisor`) and
the runtime (`runtime`) act on it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from ecolink.runtime.base import ClusterSpec, ReplicaState
from ecolink.runtime.local.logs import LogSet
from ecolink.runtime.local.proc import ChildExit
from ecolink.runtime.local.users import Credentials

Want = Literal["run", "restart", "remove", "over_quota"]


def describe_exit(code: int) -> str:
    if code == 127:
        return "exited with code 127 (command not found)"
    if code == 126:
        return "exited with code 126 (command not executable)"
    if code > 128:
        try:
            name = signal.Signals(code - 128).name
        except ValueError:
            name = f"signal {code - 128}"
        return f"killed by {name} (exit code {code})"
    return f"exited with code {code}"


def fs_env_name(name: str) -> str:
    return "ECO_FS_" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class NullListener:
    def replicas_changed(self, cluster_id: str, replicas: Sequence[ReplicaState]) -> None:
        pass

    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None:
        pass

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        pass


class GpuAllocator:
    """Hands out physical GPU indices; when there are too few, replicas share."""

    def __init__(self, count: int | None) -> None:
        self.count = count
        self.usage = [0] * (count or 0)

    def take(self, k: int) -> tuple[int, ...]:
        if self.count is None:
            return tuple(range(k))  # simulated: every replica has its own GPUs
        if self.count == 0 or k <= 0:
            return ()
        order = sorted(range(self.count), key=lambda i: (self.usage[i], i))
        chosen = tuple(sorted(order[: min(k, self.count)]))
        for i in chosen:
            self.usage[i] += 1
        return chosen

    def give(self, indices: Sequence[int]) -> None:
        if self.count is None:
            return
        for i in indices:
            self.usage[i] = max(0, self.usage[i] - 1)

    def shared(self, indices: Sequence[int], wanted: int) -> bool:
        if self.count is None:
            return False
        return len(indices) < wanted or any(self.usage[i] > 1 for i in indices)


class Replica:
    def __init__(
        self,
        cluster: LocalCluster,
        index: int,
        uid: str,
        port: int,
        gpus: tuple[int, ...],
        workdir: Path,
        logs: LogSet,
    ) -> None:
        self.cluster = cluster
        self.index = index
        self.name = f"{cluster.spec.name}-{index}"
        self.uid = uid
        self.port = port
        self.gpus = gpus
        self.workdir = workdir
        self.logs = logs
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit: ChildExit | None = None
        self.phase: Literal["Pending", "Running", "Failed"] = "Pending"
        self.ready = False
        self.restarts = 0
        self.reason: str | None = None
        self.failures = 0  # crashes in a row, each after a short run
        self.want: Want = "run"
        self.wake = asyncio.Event()
        self.runs = 0  # increases with each spawn
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.removed = False
        self.abandoned = False  # the backend shuts down and leaves the process running
        self.creds: Credentials | None = None  # the uid it runs as (None: the backend's)

    def wants(self, *kinds: Want) -> bool:
        """Whether what is asked of the replica is one of `kinds` (it changes while
        the supervisor waits)."""
        return self.want in kinds

    def state(self) -> ReplicaState:
        return ReplicaState(
            name=self.name,
            index=self.index,
            phase=self.phase,
            ready=self.ready,
            restarts=self.restarts,
            reason=self.reason,
            node="localhost",
        )


class LocalCluster:
    def __init__(self, spec: ClusterSpec) -> None:
        self.spec = spec
        self.replicas: dict[int, Replica] = {}
        self.lock = asyncio.Lock()
        self.rolling: asyncio.Task[None] | None = None
        self.failed_reported = False
        # Replicas taken out (stop, scale-down, terminate) that still drain: they got
        # SIGTERM and end in the background, within the cluster's termination grace.
        self.draining: list[Replica] = []
        self.drains: set[asyncio.Task[None]] = set()
        # The background end of a terminated cluster (None: not terminated).
        self.ending: asyncio.Task[None] | None = None
