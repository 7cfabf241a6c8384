"""What an action will cost, computed before it is sent: the billing rules of the
API in integer micro-dollars, rounded exactly as the backend rounds them.

Holds round up to the micro-dollar; a hold "for the time remaining" is computed
from the exact remaining time in microseconds (`expires_at - now`), so the preview
for a moment equals the hold the backend places at that same moment.

Pure: no textual, no IO, no clock of its own (callers pass `now`). The dashboard
may not import the backend's billing module, so the formulas are written out here
and tests check them against the hold the backend really places.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from ecocore.money import (
    MICRO,
    MoneyError,
    format_hours,
    hours_to_micro_hours,
    mul_div_ceil,
    usd_to_micros,
)

__all__ = [
    "MICRO",
    "MoneyError",
    "format_hours",
    "hours_to_micro_hours",
    "US_PER_HOUR",
    "MAX_TOTAL_MICRO_HOURS",
    "MIN_MICRO_HOURS",
    "GPU_HOLDING_STATUSES",
    "parse_time",
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
    "usd",
    "usd_exact",
    "duration_text",
    "local_time_text",
    "add_micro_hours",
    "ACCRUING_STATUSES",
    "refusal_text",
]

US_PER_HOUR = 3_600 * 1_000_000
# api.md: hours are at least 0.01 and a cluster's total duration at most 720.
MIN_MICRO_HOURS = 10_000
MAX_TOTAL_MICRO_HOURS = 720 * MICRO
# billing.md: only these statuses hold GPUs of a region's budget.
GPU_HOLDING_STATUSES = frozenset({"pending", "running", "stopping"})
# Statuses in which a cluster's charges accrue, so scaling and extending place holds.
ACCRUING_STATUSES = frozenset({"pending", "running"})


# -- parsing -----------------------------------------------------------------

def parse_time(value: str | datetime) -> datetime:
    """An RFC 3339 string (or a datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        dt = value
    else:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def parse_hours(value: object) -> int:
    """Hours as typed (number or decimal string) to micro-hours; MoneyError when not a
    positive decimal with at most 6 places."""
    mh = hours_to_micro_hours(value)
    if mh <= 0:
        raise MoneyError("must be more than 0")
    return mh


# -- rates and holds ---------------------------------------------------------

def per_replica_rate(rate_per_gpu_hour: int, gpu_count: int) -> int:
    return rate_per_gpu_hour * gpu_count


def hourly_rate(rate_per_gpu_hour: int, gpu_count: int, replicas: int) -> int:
    return rate_per_gpu_hour * gpu_count * replicas


def hold_for_hours(rate_per_hour: int, micro_hours: int) -> int:
    """`hours × rate`, rounded up to the micro-dollar."""
    if rate_per_hour <= 0 or micro_hours <= 0:
        return 0
    return mul_div_ceil(rate_per_hour, micro_hours, MICRO)


def hold_for_duration(rate_per_hour: int, duration_us: int) -> int:
    """`rate × duration` for a duration in microseconds, rounded up to the micro-dollar."""
    if rate_per_hour <= 0 or duration_us <= 0:
        return 0
    return mul_div_ceil(rate_per_hour, duration_us, US_PER_HOUR)


def remaining_us(expires_at: datetime | str, now: datetime) -> int:
    """Microseconds from `now` to `expires_at` (0 once expired)."""
    delta = parse_time(expires_at) - parse_time(now)
    us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    return max(0, us)


def launch_hold(hourly: int, micro_hours: int) -> int:
    return hold_for_hours(hourly, micro_hours)


def scale_hold(per_replica: int, replicas: int, new_replicas: int, remaining: int, *,
               accruing: bool = True) -> int:
    """Additional hold for scaling r -> r' with `remaining` microseconds left.
    Scaling down, or any scaling while stopped, holds nothing (and refunds nothing)."""
    if not accruing or new_replicas <= replicas:
        return 0
    return hold_for_duration((new_replicas - replicas) * per_replica, remaining)


def extend_hold(hourly: int, micro_hours: int, *, accruing: bool = True) -> int:
    return hold_for_hours(hourly, micro_hours) if accruing else 0


def resume_hold(hourly: int, remaining: int) -> int:
    return hold_for_duration(hourly, remaining)


# -- the same, from a cluster object as the API gives it ---------------------

def cluster_hourly_rate(cluster: Mapping[str, Any]) -> int:
    """What the cluster costs per hour at its desired count while it runs."""
    return usd_to_micros(cluster["hourly_rate"])


def cluster_per_replica_rate(cluster: Mapping[str, Any]) -> int:
    replicas = int(cluster["replicas"])
    hourly = cluster_hourly_rate(cluster)
    if replicas <= 0:
        raise ValueError("cluster has no replicas")
    return hourly // replicas


def _accruing(cluster: Mapping[str, Any]) -> bool:
    return cluster.get("status") in ACCRUING_STATUSES


def cluster_scale_hold(cluster: Mapping[str, Any], new_replicas: int, now: datetime) -> int:
    return scale_hold(cluster_per_replica_rate(cluster), int(cluster["replicas"]), new_replicas,
                      remaining_us(cluster["expires_at"], now), accruing=_accruing(cluster))


def cluster_extend_hold(cluster: Mapping[str, Any], micro_hours: int) -> int:
    return extend_hold(cluster_hourly_rate(cluster), micro_hours, accruing=_accruing(cluster))


def cluster_resume_hold(cluster: Mapping[str, Any], now: datetime) -> int:
    return resume_hold(cluster_hourly_rate(cluster), remaining_us(cluster["expires_at"], now))


def left_after(available: int, hold: int) -> int:
    """What the account will have available after the hold (negative: short by that much)."""
    return available - hold


# -- GPU budget --------------------------------------------------------------

def gpus_in_use(clusters: Iterable[Mapping[str, Any]], region: str, *,
                exclude_id: str | None = None) -> int:
    """GPUs the account's clusters hold in `region` (pending, running, stopping)."""
    total = 0
    for c in clusters:
        if c.get("region") != region or c.get("status") not in GPU_HOLDING_STATUSES:
            continue
        if exclude_id is not None and c.get("id") == exclude_id:
            continue
        total += int(c.get("gpu_count", 0)) * int(c.get("replicas", 0))
    return total


def gpus_free(budget: int, clusters: Iterable[Mapping[str, Any]], region: str, *,
              exclude_id: str | None = None) -> int:
    return max(0, budget - gpus_in_use(clusters, region, exclude_id=exclude_id))


def max_replicas(free_gpus: int, gpu_count: int) -> int:
    return free_gpus // gpu_count if gpu_count > 0 else 0


def catalog_rate(catalog: Mapping[str, Any], region: str, gpu_type: str) -> int | None:
    """The catalog's rate per GPU-hour in micro-dollars, or None if not offered."""
    for r in catalog.get("regions", []):
        if r.get("name") != region:
            continue
        for t in r.get("gpu_types", []):
            if t.get("name") == gpu_type:
                return usd_to_micros(t["rate_per_gpu_hour"])
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
        return max(0, -self.left)


def launch_preview(rate_per_gpu_hour: int, gpu_count: int, replicas: int, micro_hours: int,
                   available: int) -> LaunchPreview:
    per = per_replica_rate(rate_per_gpu_hour, gpu_count)
    hourly = per * replicas
    hold = launch_hold(hourly, micro_hours)
    return LaunchPreview(rate_per_gpu_hour, per, hourly, micro_hours, hold, available,
                         left_after(available, hold))


# -- display -----------------------------------------------------------------

def usd(micros: int) -> str:
    """`$X.XX`, rounded half up to the cent (exact values go in --json)."""
    cents = (Decimal(micros) / 10_000).to_integral_value(rounding=ROUND_HALF_UP)
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(int(cents)), 100)
    return f"{sign}${whole}.{frac:02d}"


def usd_exact(micros: int) -> str:
    """Dollars exact to the micro-dollar, at least two places: `$300.00`, `$12.345679`."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICRO)
    digits = f"{frac:06d}".rstrip("0")
    digits = digits.ljust(2, "0")
    return f"{sign}${whole}.{digits}"


def duration_text(us: int) -> str:
    """A remaining time for people: `2d 3h`, `5h 59m`, `4m 10s`, `expired`."""
    if us <= 0:
        return "expired"
    secs = us // 1_000_000
    days, rest = divmod(secs, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def local_time_text(when: datetime | str, tz: tzinfo | None = None,
                    now: datetime | None = None) -> str:
    """A time in the user's zone: `14:05` today, else `Tue 3 Feb 14:05`, with the zone."""
    dt = parse_time(when).astimezone(tz) if tz is not None else parse_time(when).astimezone()
    zone = dt.tzname() or ""
    if now is not None:
        ref = parse_time(now).astimezone(dt.tzinfo)
        if ref.date() == dt.date():
            return f"{dt:%H:%M} {zone}".strip()
    return f"{dt:%a} {dt.day} {dt:%b %H:%M} {zone}".strip()


def add_micro_hours(when: datetime | str, micro_hours: int) -> datetime:
    """`when + hours`, exact to the microsecond (a micro-hour is 3600 µs)."""
    return parse_time(when) + timedelta(microseconds=micro_hours * 3_600)


# -- refusals, in words a user can act on -------------------------------------

def refusal_text(status: int, message: str, field: str | None = None) -> str:
    """The backend's refusal (api.md error form) with what the user can do about it."""
    message = message.strip()
    if message and not message.endswith((".", "!", "?")):
        message += "."
    if status == 402:
        return (f"Not enough credit: {message} Add credit to the account, or ask for "
                "less (fewer replicas, fewer GPUs or fewer hours).")
    if status == 409:
        low = message.lower()
        if field == "name":
            return f"{message} Choose another name."
        if "budget" in low or "free" in low:
            return (f"Over the region's GPU budget: {message} Choose fewer replicas or "
                    "GPUs, or stop a cluster in that region first.")
        if "idempotency" in low:
            return f"{message} Close this and start the action again."
        return f"Not possible in the cluster's current state: {message}"
    if status == 401:
        return ("The API key was refused. Check ECO_API_KEY or api_key in the "
                "ecotui config file.")
    if status == 404:
        return f"{message} It may have been terminated; refresh and try again."
    if status == 503:
        return f"The runtime cannot be reached; nothing was changed. {message} Try again shortly."
    if status in (400, 422):
        return f"{field}: {message}" if field else message
    return f"The backend refused ({status}): {message}"
