"""Billing arithmetic: rates, holds, charges and releases, as billing.md states them.

Pure functions over integers: money in micro-dollars, durations in microseconds of
wall time (or micro-hours where the API speaks hours). No IO, no clock: the service
layer passes `now` in and writes what these functions return to the ledger.

Rounding: holds round up, charges round down, to the micro-dollar. A cluster's total
spend is computed from its exact time segments and the ledger gets the difference
from what was already posted, so rounding never accumulates.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ecocore.limits import MAX_TOTAL_MICRO_HOURS
from ecocore.money import MICRO
from ecocore.status import ACCRUING, BUDGETED

__all__ = ["ACCRUING", "BUDGETED", "MICRO"]

# One hour in microseconds; a micro-hour is 3,600 microseconds.
US_PER_HOUR = 3_600_000_000
US_PER_MICRO_HOUR = 3_600

# The longest a cluster may run in total (launch plus extensions), in micro-hours.
MAX_DURATION_MICRO_HOURS = MAX_TOTAL_MICRO_HOURS

LedgerKind = Literal["credit", "hold", "hold_release", "charge"]


def _ceil_div(num: int, den: int) -> int:
    return -((-num) // den)


def per_replica_rate(rate_per_gpu_hour: int, gpu_count: int) -> int:
    """Micro-dollars per hour for one replica."""
    return rate_per_gpu_hour * gpu_count


def hourly_rate(rate_per_gpu_hour: int, gpu_count: int, replicas: int) -> int:
    """Micro-dollars per hour for the cluster at `replicas` replicas."""
    return rate_per_gpu_hour * gpu_count * replicas


def hold_for_hours(rate_per_hour: int, micro_hours: int) -> int:
    """What `micro_hours` at `rate_per_hour` costs, rounded up (a hold)."""
    if micro_hours <= 0:
        return 0
    return _ceil_div(rate_per_hour * micro_hours, MICRO)


def hold_for_duration(rate_per_hour: int, duration_us: int) -> int:
    """What `duration_us` microseconds at `rate_per_hour` costs, rounded up (a hold)."""
    if duration_us <= 0:
        return 0
    return _ceil_div(rate_per_hour * duration_us, US_PER_HOUR)


def micro_hours_to_us(micro_hours: int) -> int:
    return micro_hours * US_PER_MICRO_HOUR


@dataclass(frozen=True)
class Segment:
    """A stretch of time during which a cluster accrued at one hourly rate.

    `end_us` None: still open (the cluster accrues now)."""

    start_us: int
    end_us: int | None
    hourly_rate: int


def segment_start(segments: Iterable[Segment], now_us: int) -> int:
    """Where a new segment starts: now, but never before an earlier one ended (a wall
    clock stepped backwards must not open a segment over time already billed)."""
    start = now_us
    for seg in segments:
        start = max(start, seg.start_us if seg.end_us is None else seg.end_us)
    return start


def accrued(segments: Iterable[Segment], until_us: int) -> int:
    """Total spend of the segments (in the order they were opened) up to `until_us`,
    rounded down once, so that posting `accrued(...) - already_posted` never drifts.

    Time is counted once: a segment that starts before the previous one ended counts
    only from that end, so no stretch of time is ever paid for twice."""
    exact = 0  # micro-dollar-microseconds per hour
    covered = None  # the end of the time counted so far
    for seg in segments:
        start = seg.start_us if covered is None else max(seg.start_us, covered)
        end = until_us if seg.end_us is None else min(seg.end_us, until_us)
        if end > start:
            exact += seg.hourly_rate * (end - start)
        seg_end = seg.start_us if seg.end_us is None else seg.end_us
        covered = seg_end if covered is None else max(covered, seg_end, start)
    return exact // US_PER_HOUR


@dataclass(frozen=True)
class ClusterMoney:
    """A cluster's running totals, all non-negative micro-dollars.

    `hold`: all holds placed; `released`: all hold releases (as a positive number);
    `spent`: all charges (positive). What it still holds is `hold - released - spent`."""

    hold: int = 0
    released: int = 0
    spent: int = 0

    @property
    def remaining(self) -> int:
        return self.hold - self.released - self.spent


def charge_due(money: ClusterMoney, segments: Iterable[Segment], until_us: int) -> int:
    """The charge to post now (a positive number, 0 when nothing is due): the exact
    spend up to `until_us` less what was already charged, never more than the
    cluster still holds."""
    due = accrued(segments, until_us) - money.spent
    return max(0, min(due, money.remaining))


def scale_up_hold(per_replica: int, old_replicas: int, new_replicas: int, remaining_us: int) -> int:
    """Extra hold for scaling up a running cluster: (r' - r) x per-replica rate x remaining."""
    if new_replicas <= old_replicas:
        return 0
    return hold_for_duration(per_replica * (new_replicas - old_replicas), remaining_us)


def signed(kind: LedgerKind, magnitude: int) -> int:
    """The ledger sign of each kind: credit and hold positive, hold_release and charge negative."""
    return magnitude if kind in ("credit", "hold") else -magnitude


def apply_posting(balance: int, held: int, kind: LedgerKind, amount: int) -> tuple[int, int]:
    """Account totals after one signed ledger amount.

    `balance = Σ credit + Σ charge`; `held = Σ hold + Σ hold_release + Σ charge`."""
    if kind == "credit":
        return balance + amount, held
    if kind in ("hold", "hold_release"):
        return balance, held + amount
    return balance + amount, held + amount  # charge


def missing(available: int, needed: int) -> int:
    """How much a hold of `needed` lacks given `available` (0: it can be placed)."""
    return max(0, needed - available)


def gpus(gpu_count: int, replicas: int) -> int:
    return gpu_count * replicas
