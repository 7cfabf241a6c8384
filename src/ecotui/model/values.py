"""The model's values: frozen cluster views, alerts, what changed, the connection.

Pure data (no textual, no IO). Money is integer micro-dollars, times are aware
datetimes, a status is `ecocore.status.ClusterStatus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, Literal

from ecocore.money import MICRO
from ecocore.status import ORDER, ClusterStatus
from ecotui.wording import parse_time_or_none

if TYPE_CHECKING:
    from ecocore.wire import ClusterOut

# Alert thresholds (issue text): expiring soon at 30 and 5 minutes; GPUs idle
# under 5 % for 10 minutes; a day of burn for the account's available credit.
EXPIRY_WARN = timedelta(minutes=30)
EXPIRY_CRITICAL = timedelta(minutes=5)
IDLE_AFTER = timedelta(minutes=10)
IDLE_UTILIZATION = 5.0
CRASH_WINDOW = timedelta(minutes=10)
CRASH_RESTARTS = 3
# The feed sends summaries every 5 s: no frame for this long means stale data.
STALE_AFTER = timedelta(seconds=15)

# Display order: the statuses a person must act on first.
STATUS_ORDER: dict[str, int] = {s.value: i for i, s in enumerate(ORDER)}
# A symbol beside every status word: status is never told by colour alone.
STATUS_SYMBOL = {
    "running": "●",
    "pending": "◌",
    "stopping": "◑",
    "stopped": "○",
    "terminating": "◑",
    "terminated": "·",
    "failed": "✖",
}

Level = Literal["", "warning", "error"]


def parse_micros(value: Any) -> int:
    """API money ("29.940000") to integer micro-dollars; anything unparsable is 0."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value * MICRO
    try:
        return int((Decimal(str(value)) * MICRO).to_integral_value())
    except (InvalidOperation, ValueError):
        return 0


def summary_util(summary: Mapping[str, Any] | None) -> float | None:
    """A GPU summary's mean utilisation, None when no GPU reported: the backend sends
    0.0 with `gpus: 0` then (a stopped cluster), which is no reading, not idle GPUs."""
    if not summary or not summary.get("gpus"):
        return None
    mu = summary.get("mean_utilization")
    return None if mu is None else float(mu)


_STATUSES: dict[object, ClusterStatus] = {s.value: s for s in ClusterStatus}


def status_of(value: Any) -> ClusterStatus | None:
    """The API's status word as the enum (None for a word the API does not use)."""
    return _STATUSES.get(value)


def expiry_level(expires_at: datetime | None, status: ClusterStatus | None, now: datetime) -> Level:
    """How urgent a cluster's expiry is: "error" under 5 minutes, "warning" under 30,
    "" otherwise (also for ended clusters and those without an expiry)."""
    if expires_at is None or status in (ClusterStatus.TERMINATED, ClusterStatus.FAILED):
        return ""
    left = expires_at - now
    if left <= EXPIRY_CRITICAL:
        return "error"
    if left <= EXPIRY_WARN:
        return "warning"
    return ""


@dataclass(frozen=True, slots=True)
class ClusterView:
    """A cluster's figures, parsed once per cluster frame."""

    id: str
    name: str
    status: ClusterStatus | None
    region: str
    gpu_type: str
    gpu_count: int
    replicas: int
    hourly: int
    burn: int
    hold: int
    spent: int
    hold_remaining: int
    projected: int
    expires_at: datetime | None
    created_at: datetime | None
    gpus: int

    @classmethod
    def of(cls, c: ClusterOut) -> ClusterView:
        cost = c.cost
        return cls(
            id=c.id,
            name=c.name,
            status=status_of(c.status),
            region=c.region,
            gpu_type=c.gpu_type,
            gpu_count=c.gpu_count,
            replicas=c.replicas,
            hourly=parse_micros(c.hourly_rate),
            burn=parse_micros(c.burn_rate),
            hold=parse_micros(cost.hold),
            spent=parse_micros(cost.spent),
            hold_remaining=parse_micros(cost.hold_remaining),
            projected=parse_micros(cost.projected_total),
            expires_at=parse_time_or_none(c.expires_at),
            created_at=parse_time_or_none(c.created_at),
            gpus=c.gpu_count * c.replicas,
        )

    @property
    def per_gpu_rate(self) -> int:
        return self.hourly // self.gpus if self.gpus else 0

    def expiry_level(self, now: datetime) -> Level:
        return expiry_level(self.expires_at, self.status, now)

    def seconds_left(self, now: datetime) -> float | None:
        return None if self.expires_at is None else (self.expires_at - now).total_seconds()


# The former name of the parsed figures.
ClusterNums = ClusterView


@dataclass(frozen=True)
class Alert:
    """Something the on-call engineer must see: in colour, in words, as a notification."""

    cluster_id: str | None  # None: the account
    kind: str  # expiring | idle | crashloop | failed | unschedulable | low_credit | gpu_health
    level: str  # "warning" | "error"
    title: str
    message: str
    # A notification is sent again only when this changes (30 min -> 5 min).
    stage: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cluster_id or "", self.kind, self.stage)


@dataclass
class ConnectionInfo:
    state: str = "connecting"  # connecting | connected | reconnecting | closed
    attempt: int = 0
    next_retry_at: datetime | None = None
    error: str | None = None
    since: datetime | None = None
    last_frame_at: datetime | None = None
    ever_connected: bool = False


@dataclass
class Changes:
    """What changed since the last repaint."""

    clusters: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    replicas: set[str] = field(default_factory=set)
    events: set[str] = field(default_factory=set)
    history: set[str] = field(default_factory=set)
    account: bool = False
    connection: bool = False
    order: bool = False
    alerts: bool = False
    snapshot: bool = False  # a (re)connection's snapshot arrived

    def __bool__(self) -> bool:
        return bool(
            self.clusters
            or self.removed
            or self.replicas
            or self.events
            or self.history
            or self.account
            or self.connection
            or self.order
            or self.alerts
            or self.snapshot
        )


@dataclass(frozen=True)
class GroupRow:
    label: str
    count: int

    @property
    def key(self) -> str:
        return f"group:{self.label}"


Sample = tuple[float, float, float, float, float]  # t (epoch s), util, mem MiB, temp C, power W
