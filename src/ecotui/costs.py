"""What an action will cost, computed before it is sent, by the very billing rules
the backend charges with (`ecocore.billing`), from API-shaped input.

Holds round up to the micro-dollar; a hold "for the time remaining" is computed
from the exact remaining time in microseconds (`expires_at - now`), so the preview
for a moment equals the hold the backend places at that same moment.

Pure: no textual, no IO, no clock of its own (callers pass `now`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ecocore import billing
from ecocore.billing import US_PER_HOUR, US_PER_MICRO_HOUR, hold_for_duration, hold_for_hours
from ecocore.limits import MAX_TOTAL_MICRO_HOURS, MIN_MICRO_HOURS
from ecocore.money import (
    MICRO,
    MoneyError,
    format_hours,
    hours_to_micro_hours,
    usd_to_micros,
)
from ecocore.status import ACCRUING, BUDGETED
from ecotui.wording import parse_time

if TYPE_CHECKING:
    from ecocore.wire import CatalogOut, ClusterOut

__all__ = [
    "MICRO",
    "MoneyError",
    "format_hours",
    "hours_to_micro_hours",
    "US_PER_HOUR",
    "MAX_TOTAL_MICRO_HOURS",
    "MIN_MICRO_HOURS",
    "GPU_HOLDING_STATUSES",
    "parse_hours",
    "usd_to_micros",
    "per_replica_rate",
    "hourly_rate",
    "hold_for_hours",
    "hold_for_duration",
    "remaining_us",
    "launch_hold",
    "scale_hold",
    "extend_hold",
    "resume_hold",
    "cluster_per_replica_rate",
    "cluster_hourly_rate",
    "cluster_scale_hold",
    "cluster_extend_hold",
    "cluster_resume_hold",
    "left_after",
    "gpus_in_use",
    "gpus_free",
    "max_replicas",
    "LaunchPreview",
    "launch_preview",
    "catalog_rate",
    "add_micro_hours",
    "ACCRUING_STATUSES",
]

# billing.md: only these statuses hold GPUs of a region's budget.
GPU_HOLDING_STATUSES = BUDGETED
# Statuses in which a cluster's charges accrue, so scaling and extending place holds.
ACCRUING_STATUSES = ACCRUING

per_replica_rate = billing.per_replica_rate
hourly_rate = billing.hourly_rate


# -- parsing -----------------------------------------------------------------


def parse_hours(value: object) -> int:
    """Hours as typed (number or decimal string) to micro-hours; MoneyError when not a
    positive decimal with at most 6 places."""
    mh = hours_to_micro_hours(value)
    if mh <= 0:
        raise MoneyError("must be more than 0")
    return mh


# -- holds -------------------------------------------------------------------


def remaining_us(expires_at: datetime | str, now: datetime) -> int:
    """Microseconds from `now` to `expires_at` (0 once expired)."""
    delta = parse_time(expires_at) - parse_time(now)
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(0, us)


def launch_hold(hourly: int, micro_hours: int) -> int:
    return hold_for_hours(hourly, micro_hours)


def scale_hold(
    per_replica: int, replicas: int, new_replicas: int, remaining: int, *, accruing: bool = True
) -> int:
    """Additional hold for scaling r -> r' with `remaining` microseconds left.
    Scaling down, or any scaling while stopped, holds nothing (and refunds nothing)."""
    if not accruing:
        return 0
    return billing.scale_up_hold(per_replica, replicas, new_replicas, remaining)


def extend_hold(hourly: int, micro_hours: int, *, accruing: bool = True) -> int:
    return hold_for_hours(hourly, micro_hours) if accruing else 0


def resume_hold(hourly: int, remaining: int) -> int:
    return hold_for_duration(hourly, remaining)


# -- the same, from a cluster object as the API gives it ---------------------


def cluster_hourly_rate(cluster: ClusterOut) -> int:
    """What the cluster costs per hour at its desired count while it runs."""
    return usd_to_micros(cluster.hourly_rate)


def cluster_per_replica_rate(cluster: ClusterOut) -> int:
    if cluster.replicas <= 0:
        raise ValueError("cluster has no replicas")
    return cluster_hourly_rate(cluster) // cluster.replicas


def _accruing(cluster: ClusterOut) -> bool:
    return cluster.status in ACCRUING_STATUSES


def cluster_scale_hold(cluster: ClusterOut, new_replicas: int, now: datetime) -> int:
    return scale_hold(
        cluster_per_replica_rate(cluster),
        cluster.replicas,
        new_replicas,
        remaining_us(cluster.expires_at, now),
        accruing=_accruing(cluster),
    )


def cluster_extend_hold(cluster: ClusterOut, micro_hours: int) -> int:
    return extend_hold(cluster_hourly_rate(cluster), micro_hours, accruing=_accruing(cluster))


def cluster_resume_hold(cluster: ClusterOut, now: datetime) -> int:
    return resume_hold(cluster_hourly_rate(cluster), remaining_us(cluster.expires_at, now))


def left_after(available: int, hold: int) -> int:
    """What the account will have available after the hold (negative: short by that much)."""
    return available - hold


# -- GPU budget --------------------------------------------------------------


def gpus_in_use(
    clusters: Iterable[ClusterOut], region: str, *, exclude_id: str | None = None
) -> int:
    """GPUs the account's clusters hold in `region` (pending, running, stopping)."""
    total = 0
    for c in clusters:
        if c.region != region or c.status not in GPU_HOLDING_STATUSES:
            continue
        if exclude_id is not None and c.id == exclude_id:
            continue
        total += billing.gpus(c.gpu_count, c.replicas)
    return total


def gpus_free(
    budget: int,
    clusters: Iterable[ClusterOut],
    region: str,
    *,
    exclude_id: str | None = None,
) -> int:
    return max(0, budget - gpus_in_use(clusters, region, exclude_id=exclude_id))


def max_replicas(free_gpus: int, gpu_count: int) -> int:
    return free_gpus // gpu_count if gpu_count > 0 else 0


def catalog_rate(catalog: CatalogOut, region: str, gpu_type: str) -> int | None:
    """The catalog's rate per GPU-hour in micro-dollars, or None if not offered."""
    for r in catalog.regions:
        if r.name != region:
            continue
        for t in r.gpu_types:
            if t.name == gpu_type:
                return usd_to_micros(t.rate_per_gpu_hour)
    return None


@dataclass(frozen=True)
class LaunchPreview:
    rate_per_gpu_hour: int
    per_replica_rate: int
    hourly_rate: int
    micro_hours: int
    hold: int
    available: int
    left: int

    @property
    def short_by(self) -> int:
        return billing.missing(self.available, self.hold)


def launch_preview(
    rate_per_gpu_hour: int, gpu_count: int, replicas: int, micro_hours: int, available: int
) -> LaunchPreview:
    per = per_replica_rate(rate_per_gpu_hour, gpu_count)
    hourly = hourly_rate(rate_per_gpu_hour, gpu_count, replicas)
    hold = launch_hold(hourly, micro_hours)
    return LaunchPreview(
        rate_per_gpu_hour, per, hourly, micro_hours, hold, available, left_after(available, hold)
    )


# -- times -----------------------------------------------------------------


def add_micro_hours(when: datetime | str, micro_hours: int) -> datetime:
    """`when + hours`, exact to the microsecond (a micro-hour is 3600 µs)."""
    return parse_time(when) + timedelta(microseconds=micro_hours * US_PER_MICRO_HOUR)
