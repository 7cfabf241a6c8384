"""The table of a cluster's legal status moves (`ecocore.status.TRANSITIONS`) and the
moves the service makes through it."""

from __future__ import annotations

import pytest

from ecocore.status import (
    ACCRUING,
    EXPIRABLE,
    LIVE,
    TERMINAL,
    TRANSITIONS,
    ClusterStatus,
    IllegalTransition,
    can_move,
    check_move,
)

S = ClusterStatus

# Every move the service makes, with the use case that makes it.
SERVICE_MOVES = [
    (S.PENDING, S.RUNNING),  # every replica runs
    (S.STOPPING, S.STOPPED),  # no replica is left
    (S.PENDING, S.STOPPING),  # stop
    (S.RUNNING, S.STOPPING),  # stop
    (S.STOPPED, S.PENDING),  # resume
    (S.STOPPING, S.PENDING),  # resume before the replicas are gone
    (S.PENDING, S.TERMINATING),  # expiry
    (S.RUNNING, S.TERMINATING),
    (S.STOPPING, S.TERMINATING),
    (S.STOPPED, S.TERMINATING),
    (S.TERMINATING, S.TERMINATED),  # the runtime removed it
    (S.PENDING, S.TERMINATED),  # terminate
    (S.RUNNING, S.TERMINATED),
    (S.STOPPING, S.TERMINATED),
    (S.STOPPED, S.TERMINATED),
    (S.FAILED, S.TERMINATED),
    (S.PENDING, S.FAILED),  # the runtime gave up
    (S.RUNNING, S.FAILED),
]


def test_the_table_names_every_status_and_only_statuses() -> None:
    assert set(TRANSITIONS) == set(ClusterStatus)
    for targets in TRANSITIONS.values():
        assert targets <= set(ClusterStatus)


@pytest.mark.parametrize("status", list(ClusterStatus))
def test_a_status_may_always_stay_as_it_is(status: ClusterStatus) -> None:
    assert can_move(status, status)
    assert check_move(str(status), str(status)) is status


@pytest.mark.parametrize(("old", "new"), SERVICE_MOVES)
def test_every_move_the_service_makes_is_legal(old: ClusterStatus, new: ClusterStatus) -> None:
    assert check_move(old.value, new.value) is new


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.TERMINATED, S.PENDING),
        (S.TERMINATED, S.TERMINATING),
        (S.TERMINATING, S.PENDING),
        (S.TERMINATING, S.STOPPED),
        (S.STOPPED, S.RUNNING),  # a resume goes through pending
        (S.STOPPED, S.STOPPING),
        (S.FAILED, S.RUNNING),
        (S.FAILED, S.PENDING),
    ],
)
def test_moves_the_table_refuses(old: ClusterStatus, new: ClusterStatus) -> None:
    assert not can_move(old, new)
    with pytest.raises(IllegalTransition) as refused:
        check_move(old, new)
    assert (refused.value.old, refused.value.new) == (old, new)
    assert str(refused.value) == f"a {old} cluster cannot become {new}"


def test_terminated_is_final_and_every_live_status_can_end() -> None:
    assert TRANSITIONS[S.TERMINATED] == frozenset()
    for status in LIVE:
        assert can_move(status, S.TERMINATED)
    for status in EXPIRABLE:
        assert can_move(status, S.TERMINATING)
    for status in ACCRUING:
        assert can_move(status, S.FAILED)
    for status in TERMINAL:
        assert not any(can_move(status, s) for s in ACCRUING)


def test_an_unknown_word_is_not_a_status() -> None:
    with pytest.raises(ValueError):
        check_move("running", "paused")
