"""A cluster's status over its life: what the replicas say it is now (a pure
function), every move checked against `ecocore.status.TRANSITIONS`, and the expiry
warnings that an extension takes back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from ecocore.status import ClusterStatus, check_move
from ecolink.runtime.base import ReplicaState
from ecolink.store import Cluster

MICROS_PER_SECOND = 1_000_000
# (bit in `Cluster.warned`, how long before expiry in microseconds)
WARNINGS = ((1, 30 * 60 * MICROS_PER_SECOND), (2, 5 * 60 * MICROS_PER_SECOND))
# Replica phases that still hold (or will hold) the cluster's GPUs.
_ALIVE = ("Pending", "Running", "Unknown")


class Derived(NamedTuple):
    status: ClusterStatus
    started_at: int | None


def derive_status(c: Cluster, replicas: Sequence[ReplicaState], now: int) -> Derived:
    """pending -> running once every replica runs (started now), stopping -> stopped
    once none is alive; any other status stays as it is."""
    status = ClusterStatus(c.status)
    if status is ClusterStatus.PENDING:
        running = sum(1 for s in replicas if s.phase == "Running")
        if running >= c.replicas > 0:
            return Derived(ClusterStatus.RUNNING, now)
    elif status is ClusterStatus.STOPPING:
        if not any(s.phase in _ALIVE for s in replicas):
            return Derived(ClusterStatus.STOPPED, c.started_at)
    return Derived(status, c.started_at)


def move(c: Cluster, status: ClusterStatus) -> None:
    """Set `c`'s status, refusing a move the transition table does not allow."""
    c.status = check_move(c.status, status)


def follow(c: Cluster, replicas: Sequence[ReplicaState], now: int) -> None:
    """Move `c` to the status its replicas show."""
    status, started_at = derive_status(c, replicas, now)
    move(c, status)
    c.started_at = started_at


def alive(replicas: Sequence[ReplicaState]) -> list[ReplicaState]:
    return [s for s in replicas if s.phase in _ALIVE]


def update_warnings(c: Cluster, now: int) -> None:
    """Forget warnings whose moment moved out again (after an extension)."""
    for bit, before in WARNINGS:
        if c.warned & bit and c.expires_at - now > before:
            c.warned &= ~bit
