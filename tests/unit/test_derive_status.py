"""`derive_status`: what a cluster's replicas say its status is, as a pure function;
and `move`, which refuses what the transition table does not allow."""

from __future__ import annotations

import dataclasses

import pytest

from ecocore.status import ClusterStatus, IllegalTransition
from ecolink.runtime.base import Phase, ReplicaState
from ecolink.service.lifecycle import Derived, derive_status, follow, move
from ecolink.store import Cluster

S = ClusterStatus
NOW = 1_767_225_600_000_000
STARTED = NOW - 3_600_000_000


def cluster(status: str, replicas: int = 2, started_at: int | None = None) -> Cluster:
    return Cluster(
        id="gc_1",
        account_id="acct",
        name="demo",
        region="us-east",
        gpu_type="L40S",
        gpu_count=1,
        replicas=replicas,
        image="img",
        startup_command=None,
        shared_filesystems=(),
        rate_per_gpu_hour=950_000,
        status=status,
        status_reason=None,
        created_at=NOW - 7_200_000_000,
        started_at=started_at,
        expires_at=NOW + 3_600_000_000,
        duration_mh=3_000_000,
        endpoint_port=None,
        suspended=False,
        terminated_at=None,
        warned=0,
        hold_total=0,
        released_total=0,
        spent_total=0,
        last_charge_at=NOW,
        version=1,
    )


def replicas(*phases: Phase) -> list[ReplicaState]:
    return [
        ReplicaState(name=f"demo-{i}", index=i, phase=p, ready=p == "Running")
        for i, p in enumerate(phases)
    ]


def test_pending_becomes_running_once_every_replica_runs_and_starts_now() -> None:
    assert derive_status(cluster("pending"), replicas("Running", "Running"), NOW) == Derived(
        S.RUNNING, NOW
    )


@pytest.mark.parametrize(
    "phases",
    [(), ("Running",), ("Running", "Pending"), ("Running", "Failed"), ("Unknown", "Unknown")],
)
def test_pending_stays_pending_until_every_replica_runs(phases: tuple[Phase, ...]) -> None:
    assert derive_status(cluster("pending"), replicas(*phases), NOW) == Derived(S.PENDING, None)


def test_a_pending_cluster_of_no_replicas_never_counts_as_running() -> None:
    assert derive_status(cluster("pending", replicas=0), [], NOW).status is S.PENDING


@pytest.mark.parametrize("phases", [(), ("Succeeded",), ("Failed", "Succeeded")])
def test_stopping_becomes_stopped_once_no_replica_is_alive(phases: tuple[Phase, ...]) -> None:
    c = cluster("stopping", started_at=STARTED)
    assert derive_status(c, replicas(*phases), NOW) == Derived(S.STOPPED, STARTED)


@pytest.mark.parametrize("alive", ["Pending", "Running", "Unknown"])
def test_stopping_stays_stopping_while_a_replica_is_alive(alive: Phase) -> None:
    c = cluster("stopping", started_at=STARTED)
    assert derive_status(c, replicas("Failed", alive), NOW) == Derived(S.STOPPING, STARTED)


@pytest.mark.parametrize("status", ["running", "stopped", "terminating", "terminated", "failed"])
def test_other_statuses_are_not_derived_from_replicas(status: str) -> None:
    c = cluster(status, started_at=STARTED)
    for phases in [(), ("Running", "Running"), ("Failed",)]:
        assert derive_status(c, replicas(*phases), NOW) == Derived(S(status), STARTED)


def test_derive_status_changes_nothing_it_is_given() -> None:
    c = cluster("pending")
    states = replicas("Running", "Running")
    before = (dataclasses.replace(c), list(states))
    derive_status(c, states, NOW)
    assert (c, states) == before


def test_follow_moves_the_cluster_to_the_derived_status() -> None:
    c = cluster("pending")
    follow(c, replicas("Running", "Running"), NOW)
    assert (c.status, c.started_at) == (S.RUNNING, NOW)


def test_move_refuses_what_the_table_does_not_allow_and_keeps_the_status() -> None:
    c = cluster("terminated")
    with pytest.raises(IllegalTransition):
        move(c, S.PENDING)
    assert c.status == "terminated"
    move(c, S.TERMINATED)
    assert c.status is S.TERMINATED
