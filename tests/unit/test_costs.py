"""Preview math of ecotui.costs: the billing rules in micro-dollars, holds rounded up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecocore import billing
from ecocore.money import format_usd
from ecocore.wire import CatalogOut
from ecotui import costs, wording
from support.wire import cluster_out

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
H = 3_600_000_000  # microseconds per hour


def cluster(**kw):
    """A cluster as the REST client answers it."""
    return cluster_out(**kw)


def test_worked_example_of_billing_md():
    # us-east, H100-80GB at $2.50/GPU-h, 4 GPUs x 3 replicas, 10 h.
    rate = costs.usd_to_micros("2.50")
    p = costs.launch_preview(rate, 4, 3, costs.parse_hours("10"), available=1_000_000_000)
    assert p.per_replica_rate == 10_000_000
    assert p.hourly_rate == 30_000_000
    assert p.hold == 300_000_000
    assert p.left == 700_000_000 and p.short_by == 0
    # 4 h in: scale to 5 with 6 h left: 2 x $10 x 6 = $120.
    c = cluster(expires_at=(T0 + timedelta(hours=10)).isoformat())
    assert costs.cluster_scale_hold(c, 5, T0 + timedelta(hours=4)) == 120_000_000
    # 6 h in, at 2 replicas ($20/h): extend 2 h = $40.
    c2 = cluster(replicas=2, hourly_rate="20.000000")
    assert costs.cluster_extend_hold(c2, costs.parse_hours(2)) == 40_000_000
    # 8 h in (expires at 12 h): resume = 4 h x $20 = $80.
    c3 = cluster(
        replicas=2,
        hourly_rate="20.000000",
        status="stopped",
        expires_at=(T0 + timedelta(hours=12)).isoformat(),
    )
    assert costs.cluster_resume_hold(c3, T0 + timedelta(hours=8)) == 80_000_000


def test_launch_hold_rounds_up_to_the_micro_dollar():
    # $0.333333/h for 0.5 h = 0.1666665 -> 0.166667
    assert costs.launch_hold(333_333, costs.parse_hours("0.5")) == 166_667
    # exact products are not rounded
    assert costs.launch_hold(3_000_000, costs.parse_hours("0.01")) == 30_000
    # 1 micro-hour at $1/h is one micro-dollar, never zero
    assert costs.launch_hold(1_000_000, 1) == 1


def test_scale_hold_uses_exact_remaining_time_and_rounds_up():
    c = cluster(expires_at="2026-01-01T13:00:00Z")  # 1 h after T0
    now = T0 + timedelta(seconds=1)  # 3599 s remain
    # (5-3) x $10/h x 3599/3600 h = 19.994444... -> 19.994445
    assert costs.cluster_scale_hold(c, 5, now) == 19_994_445
    now2 = T0 + timedelta(microseconds=1)
    # 20 x (3600e6 - 1)/3600e6 = 19.99999999444 -> 20.000000
    assert costs.cluster_scale_hold(c, 5, now2) == 20_000_000


def test_scaling_down_or_while_stopped_holds_nothing():
    c = cluster()
    assert costs.cluster_scale_hold(c, 2, T0) == 0
    assert costs.cluster_scale_hold(c, 3, T0) == 0
    stopped = cluster(status="stopped")
    assert costs.cluster_scale_hold(stopped, 9, T0) == 0
    assert costs.cluster_extend_hold(stopped, costs.parse_hours(5)) == 0


def test_pending_clusters_accrue_so_they_hold():
    c = cluster(status="pending", expires_at="2026-01-01T13:00:00Z")
    assert costs.cluster_scale_hold(c, 4, T0) == 10_000_000
    assert costs.cluster_extend_hold(c, costs.parse_hours(1)) == 30_000_000


def test_expired_cluster_has_nothing_remaining():
    c = cluster(expires_at="2026-01-01T11:00:00Z", status="stopped")
    assert costs.remaining_us(c.expires_at, T0) == 0
    assert costs.cluster_resume_hold(c, T0) == 0
    assert costs.cluster_scale_hold(cluster(expires_at="2026-01-01T11:00:00Z"), 9, T0) == 0


def test_per_replica_rate_from_the_cluster():
    assert costs.cluster_per_replica_rate(cluster()) == 10_000_000
    assert costs.cluster_hourly_rate(cluster()) == 30_000_000


@given(
    rate=st.integers(1, 50_000_000),
    gpus=st.sampled_from([1, 2, 4, 8]),
    r=st.integers(2, 20),
    dr=st.integers(1, 20),
    rem=st.integers(0, 720 * H),
)
def test_scale_hold_matches_decimal_arithmetic(rate, gpus, r, dr, rem):
    from decimal import ROUND_CEILING, Decimal

    per = rate * gpus
    expected = (Decimal(dr * per) * Decimal(rem) / Decimal(H)).to_integral_value(ROUND_CEILING)
    got = costs.scale_hold(per, r, r + dr, rem)
    assert got == int(expected)
    assert got >= 0


@given(hourly=st.integers(1, 10**9), mh=st.integers(1, 720 * 10**6))
def test_hold_for_hours_is_never_below_the_exact_value(hourly, mh):
    hold = costs.hold_for_hours(hourly, mh)
    assert hold * 10**6 >= hourly * mh > (hold - 1) * 10**6


@given(
    rate=st.integers(1, 50_000_000),
    gpus=st.sampled_from([1, 2, 4, 8]),
    r=st.integers(2, 20),
    new=st.integers(2, 40),
    rem_us=st.integers(0, 720 * H),
    mh=st.integers(10_000, 720 * 10**6),
    status=st.sampled_from(["pending", "running", "stopping", "stopped"]),
)
def test_previews_from_api_clusters_are_the_backend_billing(rate, gpus, r, new, rem_us, mh, status):
    """What the dashboard previews from a cluster as the API shows it is what
    `ecocore.billing` (the functions the backend charges with) holds for the
    backend's own inputs: the rate per GPU-hour, GPUs per replica, replicas."""
    hourly = billing.hourly_rate(rate, gpus, r)
    c = cluster(
        gpu_count=gpus,
        replicas=r,
        status=status,
        hourly_rate=format_usd(hourly),
        expires_at=(T0 + timedelta(microseconds=rem_us)).isoformat(),
    )
    accruing = status in ("pending", "running")
    per_replica = billing.per_replica_rate(rate, gpus)
    assert costs.cluster_per_replica_rate(c) == per_replica
    assert costs.cluster_scale_hold(c, new, T0) == (
        billing.scale_up_hold(per_replica, r, new, rem_us) if accruing else 0
    )
    assert costs.cluster_extend_hold(c, mh) == (
        billing.hold_for_hours(hourly, mh) if accruing else 0
    )
    assert costs.cluster_resume_hold(c, T0) == billing.hold_for_duration(hourly, rem_us)
    p = costs.launch_preview(rate, gpus, r, mh, available=10**9)
    assert p.hold == billing.hold_for_hours(hourly, mh)
    assert p.short_by == billing.missing(10**9, p.hold)


def test_parse_hours():
    assert costs.parse_hours("1.5") == 1_500_000
    assert costs.parse_hours(2) == 2_000_000
    for bad in ("0", "-1", "abc", "1.0000001", ""):
        with pytest.raises(costs.MoneyError):
            costs.parse_hours(bad)


def test_gpu_budget_counts_only_clusters_holding_gpus_in_the_region():
    clusters = [
        cluster(id="a", gpu_count=4, replicas=3, status="running"),
        cluster(id="b", gpu_count=2, replicas=2, status="pending"),
        cluster(id="c", gpu_count=8, replicas=2, status="stopped"),
        cluster(id="d", gpu_count=8, replicas=2, status="terminated"),
        cluster(id="e", gpu_count=1, replicas=2, status="stopping"),
        cluster(id="f", gpu_count=8, replicas=4, status="running", region="eu-west"),
    ]
    assert costs.gpus_in_use(clusters, "us-east") == 12 + 4 + 2
    assert costs.gpus_in_use(clusters, "us-east", exclude_id="a") == 6
    assert costs.gpus_free(32, clusters, "us-east") == 14
    assert costs.gpus_free(10, clusters, "us-east") == 0
    assert costs.max_replicas(14, 4) == 3
    assert costs.max_replicas(14, 0) == 0


def test_catalog_rate():
    cat = {
        "regions": [
            {
                "name": "us-east",
                "gpu_budget": 32,
                "gpu_types": [
                    {
                        "name": "H100-80GB",
                        "rate_per_gpu_hour": "2.500000",
                        "gpu_counts": [1, 2, 4, 8],
                    }
                ],
            }
        ]
    }
    cat = CatalogOut.model_validate(cat)
    assert costs.catalog_rate(cat, "us-east", "H100-80GB") == 2_500_000
    assert costs.catalog_rate(cat, "us-east", "A100") is None
    assert costs.catalog_rate(cat, "eu-west", "H100-80GB") is None


def test_short_by_when_the_hold_exceeds_what_is_available():
    p = costs.launch_preview(2_500_000, 8, 4, 100 * 10**6, available=5_000_000_000)
    assert p.hold == 8_000_000_000
    assert p.left == -3_000_000_000
    assert p.short_by == 3_000_000_000


def test_money_display():
    assert wording.usd(300_000_000) == "$300.00"
    assert wording.usd(12_345_678) == "$12.35"
    assert wording.usd(12_344_999) == "$12.34"
    assert wording.usd(5_000) == "$0.01"
    assert wording.usd(-1_250_000) == "-$1.25"
    assert wording.usd_exact(300_000_000) == "$300.00"
    assert wording.usd_exact(12_345_679) == "$12.345679"
    assert wording.usd_exact(12_300_000) == "$12.30"
    assert wording.usd_exact(1) == "$0.000001"


def test_duration_text():
    assert wording.duration_text(0) == "expired"
    assert wording.duration_text(59 * 10**6) == "59s"
    assert wording.duration_text((4 * 60 + 10) * 10**6) == "4m 10s"
    assert wording.duration_text(5 * H + 59 * 60 * 10**6) == "5h 59m"
    assert wording.duration_text(50 * H) == "2d 2h"


def test_new_expiry_and_local_time():
    new = costs.add_micro_hours("2026-01-01T22:00:00Z", costs.parse_hours("1.5"))
    assert new == datetime(2026, 1, 1, 23, 30, tzinfo=UTC)
    tz = timezone(timedelta(hours=2), "CEST")
    assert wording.local_time_text(new, tz, now=T0) == "Fri 2 Jan 01:30 CEST"
    assert wording.local_time_text(new, UTC, now=T0) == "23:30 UTC"


def test_parse_time_accepts_z_and_offsets():
    assert wording.parse_time("2026-01-01T12:00:00Z") == T0
    assert wording.parse_time("2026-01-01T14:00:00+02:00") == T0
    assert wording.parse_time("2026-01-01T12:00:00.000001Z") == T0 + timedelta(microseconds=1)
