"""A cluster's status: the words of api.md, the groups the rules use, and the legal moves."""

from __future__ import annotations

from enum import StrEnum


class ClusterStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"


S = ClusterStatus

# Statuses in which a cluster's GPUs are committed: charges accrue.
ACCRUING: frozenset[ClusterStatus] = frozenset({S.PENDING, S.RUNNING})
# Statuses that count against the account's budget (a stopping cluster still holds GPUs).
BUDGETED: frozenset[ClusterStatus] = frozenset({S.PENDING, S.RUNNING, S.STOPPING})
# Not ended yet: the cluster still has a Deployment or may get one back.
LIVE: frozenset[ClusterStatus] = frozenset(
    {S.PENDING, S.RUNNING, S.STOPPING, S.STOPPED, S.TERMINATING}
)
# Ended for good.
TERMINAL: frozenset[ClusterStatus] = frozenset({S.TERMINATED, S.FAILED})
# The reaper terminates these when their time is up.
EXPIRABLE: frozenset[ClusterStatus] = frozenset({S.PENDING, S.RUNNING, S.STOPPING, S.STOPPED})
# Display order: the statuses a person must act on first.
ORDER: tuple[ClusterStatus, ...] = (
    S.FAILED,
    S.PENDING,
    S.RUNNING,
    S.STOPPING,
    S.STOPPED,
    S.TERMINATING,
    S.TERMINATED,
)

# Every legal move. A status may always stay as it is.
TRANSITIONS: dict[ClusterStatus, frozenset[ClusterStatus]] = {
    S.PENDING: frozenset({S.RUNNING, S.STOPPING, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.RUNNING: frozenset({S.PENDING, S.STOPPING, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.STOPPING: frozenset({S.STOPPED, S.PENDING, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.STOPPED: frozenset({S.PENDING, S.TERMINATING, S.TERMINATED, S.FAILED}),
    S.TERMINATING: frozenset({S.TERMINATED, S.FAILED}),
    S.TERMINATED: frozenset(),
    S.FAILED: frozenset({S.TERMINATING, S.TERMINATED}),
}


class IllegalTransition(ValueError):
    def __init__(self, old: ClusterStatus, new: ClusterStatus) -> None:
        super().__init__(f"a {old} cluster cannot become {new}")
        self.old, self.new = old, new


def can_move(old: str, new: str) -> bool:
    """Whether a cluster in `old` may become `new` (staying put is always allowed)."""
    a, b = ClusterStatus(old), ClusterStatus(new)
    return a == b or b in TRANSITIONS[a]


def check_move(old: str, new: str) -> ClusterStatus:
    """`new` as the enum, or IllegalTransition when the table does not allow the move."""
    if not can_move(old, new):
        raise IllegalTransition(ClusterStatus(old), ClusterStatus(new))
    return ClusterStatus(new)
